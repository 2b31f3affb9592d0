"""The Flower ClientApp: one handler per message type, by training mode."""

from __future__ import annotations

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client import lora_round, zo_round
from federated.config import parse_run_config

app = ClientApp()

# Ray gives each actor one CPU; more torch threads than that only fight over it.
torch.set_num_threads(1)


def _mode(context: Context):
    return zo_round if parse_run_config(context.run_config).mode == "zo" else lora_round


@app.train()
def train(msg: Message, context: Context) -> Message:
    return _mode(context).train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _mode(context).evaluate(msg, context)
