"""A finished LoRA run that several test modules read (``conftest.lora_run`` makes it once per
session): tiny-llama, 2 clients, 2 rounds, each round's checkpoint kept, the last round's
answers scored (eval.generate). Tests write beside it (evaluation/, export/), never into it."""

from __future__ import annotations

# A short tiny-llama run with every round kept, for tests that make runs of their own.
TINY_LM = {
    "model.name": "tiny-llama",
    "num-server-rounds": 2,
    "server.keep-checkpoints": True,
    "train.local-steps": 2,
    "train.lr": 0.05,
    "strategy.fraction-evaluate": 0.0,
    "eval.max-examples": 8,
}
LORA_RUN = {**TINY_LM, "eval.generate": True, "eval.max-new-tokens": 6}
LORA_RUN_CLIENTS = 2
