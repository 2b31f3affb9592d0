"""federated: the parts every process of a run shares (config, protocol, model, privacy, ...)."""

import logging

# bitsandbytes' CPU backend, imported by peft in every process, warns at import that it cannot
# fetch an optional faster kernel from the hub (a run has no network, and the plain kernel
# works): a warning on every client's start that asks users for nothing.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# LLM.int8 computes in float16 by design; bitsandbytes says so on every forward of every layer.
logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
# Flower's logger prints through its own console handler, and would pass each record on to the
# root logger too, which opacus's import gives a stderr handler (its logging.basicConfig): every
# line of a run, Flower's DEBUG lines as well, would be printed twice.
logging.getLogger("flwr").propagate = False
