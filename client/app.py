"""The Flower ClientApp: one handler per message type, by training mode."""

from __future__ import annotations

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client import lora_round, secure_aggregation, split_round, zo_round
from client.deadline import end_past_deadline
from client.node import describe
from client.planned_memory import allocator_for_planned_memory
from federated.config import parse_run_config
from federated.protocol import message_keys as keys
from federated.protocol import split_keys
from federated.secagg import protocol
from simulation import ray_workers

# Ray gives each actor one CPU; more torch threads than that only fight over it.
torch.set_num_threads(1)
# In a simulation's process, before it builds its workers: a ClientApp that hangs loses its own.
ray_workers.install()


_ROUNDS = {"lora": lora_round, "zo": zo_round, "split": split_round}


def _mode(msg: Message, context: Context):
    """The round's handlers: the run's mode's, or, for a device the server planned as a split
    device in a LoRA run, split learning's."""
    mode = parse_run_config(context.run_config).mode
    round_config = msg.content.config_records.get(keys.CONFIG)
    planned = round_config.get(keys.PLANNED_MODE) if round_config is not None else None
    return _ROUNDS["split" if mode == "lora" and planned == "split" else mode]


def train(msg: Message, context: Context) -> Message:
    return _mode(msg, context).train(msg, context)


def evaluate(msg: Message, context: Context) -> Message:
    return _mode(msg, context).evaluate(msg, context)


# SecAgg+'s training (or evaluation) stage: train as usual, send the update masked.
collect = secure_aggregation.collect_with(train, evaluate)


def register(app: ClientApp) -> ClientApp:
    """Every handler of fedtune's clients on ``app`` (tests register them on their own app)."""
    app.train()(train)
    app.evaluate()(evaluate)
    app.query()(describe)
    app.train(protocol.SETUP)(secure_aggregation.setup)
    app.train(protocol.SHARE_KEYS)(secure_aggregation.share_keys)
    app.train(protocol.COLLECT)(collect)
    app.train(protocol.CONSISTENCY)(secure_aggregation.consistency)
    app.train(protocol.UNMASK)(secure_aggregation.unmask)
    app.train(split_keys.START)(split_round.start)
    app.train(split_keys.LOSS)(split_round.loss_gradient)
    app.train(split_keys.BACKWARD)(split_round.backward)
    return app


# Only this app ends its process past a message's deadline (tests run handlers in theirs) and
# sets the allocator a node's memory plan assumes (a process of its own for each message).
app = register(ClientApp(mods=[end_past_deadline, allocator_for_planned_memory]))
