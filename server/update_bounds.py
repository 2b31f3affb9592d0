"""What an honest client can send in a round, worked out from the run config and the split.

- How far a weight can move: AdamW's bound over the round's local steps at the round's learning
  rate (``federated.protocol.optimizer_bound``), for every tensor that starts from what the
  server sent (not fresh factors, nor a client's own B).
- How many examples a client can claim: its partition's training records in the server's own
  copy of the split (clients split the same data with the same seed), plus six standard
  deviations of the count noise when record-level DP noises it; or ``server.max-examples``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from federated.config import ConfigError, RunConfig
from federated.model.lora import LoraPair
from federated.privacy.planned_epsilon import partition_record_counts
from federated.privacy.record_count import COUNT_NOISE_SIGMAS
from federated.protocol.optimizer_bound import adamw_max_move
from federated.protocol.round_plan import RoundPlan
from federated.protocol.wire import rounding_room


@dataclass(frozen=True)
class MoveBound:
    """The furthest any weight can move from what the server sent, and the tensors exempt."""

    per_weight: float
    exempt: frozenset[str]

    def problem(self, name: str, moved: float) -> str | None:
        if name in self.exempt or moved <= self.per_weight * (1 + 1e-4) + 1e-7:
            return None
        return (
            f"'{name}' moved a weight by {moved:.3g}; the round's AdamW steps move one by at "
            f"most {self.per_weight:.3g}"
        )


def move_bound(
    config: RunConfig,
    server_round: int,
    plan: RoundPlan,
    pairs: Iterable[LoraPair],
    reference: Mapping[str, torch.Tensor],
) -> MoveBound | None:
    """The round's bound, or None when the server cannot know the step count (local epochs)."""
    train = config.train
    if train.local_steps < 1:
        return None
    exempt: set[str] = set()
    for pair in pairs:
        if plan.fresh_factors:
            exempt |= {pair.a_key, pair.b_key}
        elif plan.keep_b:
            exempt.add(pair.b_key)
    start = max((float(t.abs().max()) for t in reference.values() if t.numel()), default=0.0)
    lr = train.lr_at(server_round, config.num_server_rounds)
    # A split device also takes its local-loss steps, before any exchange.
    splits = config.mode == "split" or config.simulation.split_fallback
    local = config.split.local_steps if splits else 0
    limit = adamw_max_move(lr, train.local_steps + local, train.weight_decay, start)
    # A weight's reply is rounded to wire.dtype after its steps: an honest one may land past
    # the exact bound by that rounding.
    limit += rounding_room(config.wire.dtype, start + limit)
    return MoveBound(limit, frozenset(exempt))


@dataclass(frozen=True)
class ExampleBound:
    """The most examples each partition's client can claim."""

    per_partition: tuple[float, ...]  # empty: one cap for every client
    cap: float

    def problem(self, partition_id: float, claimed: float) -> str | None:
        if self.per_partition:
            count = len(self.per_partition)
            if partition_id != int(partition_id) or not 0 <= partition_id < count:
                return f"partition-id {partition_id:g} is not one of 0..{count - 1}"
            limit = self.per_partition[int(partition_id)]
            where = f"partition {int(partition_id)} holds"
        else:
            limit, where = self.cap, "server.max-examples allows"
        if claimed > limit:
            # A node that trains on its own data file holds what the split cannot tell.
            hint = (
                "; a node with its own data file needs server.max-examples"
                if self.per_partition
                else ""
            )
            return f"claims {claimed:g} examples; {where} {limit:g}{hint}"
        return None


def example_bound(config: RunConfig, num_partitions: int) -> ExampleBound:
    """Each partition's training records, the audit's canaries among them (with the count
    noise's room under record-level DP), when the split has ``num_partitions``; or the
    configured cap."""
    if config.server.max_examples:
        return ExampleBound((), float(config.server.max_examples))
    # A noised count further above the truth than the slack is a lie, not bad luck.
    slack = COUNT_NOISE_SIGMAS * config.dp.record.count_noise if config.dp.record_level else 0.0
    try:
        sizes = partition_record_counts(config, num_partitions)
    except ValueError as err:  # the clients cannot split the data this way either
        raise ConfigError(
            f"the data cannot be split across {num_partitions} clients: {err}"
        ) from None
    return ExampleBound(tuple(size + slack for size in sizes), 0.0)
