"""A mixed federation on the server: a device that the simulator put on zeroth-order steps
replies with (seed index, scalar) pairs, which become the LoRA factors they stand for before
any strategy sees them; from there on the reply is judged and aggregated as any other.

Only strategies that send every client the whole factors and take back all it trained can do
this: the server must know where each zeroth-order client started.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import Message, MetricRecord, RecordDict

from federated.config import RunConfig
from federated.model.local_model import factors_at_rank
from federated.protocol import message_keys as keys
from federated.protocol.round_plan import RoundPlan
from federated.protocol.wire import record_to_tensors, tensors_to_record
from federated.zo.factor_steps import factor_lr, replay_pairs
from federated.zo.seed_pool import SeedPool
from strategies.strategy_wrapper import Strategy


def zo_fallback_problem(strategy: Strategy) -> str | None:
    """Why ``strategy`` cannot take zeroth-order devices beside first-order ones, or None."""
    if strategy.reply_kind != "tensors":
        return "a zeroth-order run has no factors for first-order clients to share"
    payload = strategy.train_payload()
    if payload.plan != RoundPlan():
        return f"{strategy.name} trains part of the factors, keeps some, or starts them afresh"
    if set(payload.trainable) != set(strategy.reply_reference()):
        return f"{strategy.name} does not send every factor its clients train"
    return None


def as_factor_reply(
    reply: Message, start: Mapping[str, torch.Tensor], rank: int, config: RunConfig
) -> RecordDict:
    """The content of a first-order reply that ends where the zeroth-order ``reply``'s steps
    took the factors ``start`` (a checked seed reply: ``check_seed_reply``)."""
    steps = record_to_tensors(reply.content.array_records[keys.ARRAYS])
    z = config.zo
    factors = replay_pairs(
        factors_at_rank(start, rank),
        steps[keys.SEED_INDICES],
        steps[keys.SEED_SCALARS],
        SeedPool.from_run_seed(config.seed, z.pool_size),
        lr=factor_lr(config),
        structure=z.perturbation,
    )
    metrics = MetricRecord({**reply.content.metric_records[keys.METRICS], keys.LORA_RANK: rank})
    return RecordDict({keys.ARRAYS: tensors_to_record(factors), keys.METRICS: metrics})
