"""The Flower side every fedtune strategy shares, LoRA or seed-based: the global model, a round's
nodes drawn by the sampler, replies checked and folded in, SecAgg+ means, checkpoints.

The LoRA strategies (``lora_strategy``) and the seed-based one (``fedkseed``) send and combine
different things; on this base each says only that: its messages (``messages_to``), what one
upload moves (``client_delta``, ``apply_mean_delta``) and its aggregate (``aggregate``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from logging import INFO
from typing import Any, ClassVar

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from flwr.supercore import log

from federated.config import RunConfig
from federated.model.lora import LoraPair, lora_pairs
from federated.protocol import message_keys as keys
from federated.protocol.global_model import GlobalModel, Tensors
from federated.protocol.round_plan import RoundPlan
from federated.protocol.wire import record_to_tensors, tensors_to_record
from strategies.node_pool import NodePool
from strategies.partition_sampling import PartitionSampler
from strategies.privacy_hooks import PrivacyHooks

STATE_PREFIX = "strategy/"  # checkpoint tensors that are a strategy's state, not the model


def _shapes(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in tensors.items()}


@dataclass(frozen=True)
class Payload:
    """What a round sends each client: tensors to set, base deltas, and the plan."""

    trainable: Tensors
    base_delta: Tensors
    plan: RoundPlan


class FederatedStrategy(PrivacyHooks, FedAvg):
    """Base of fedtune's strategies; how many nodes a round asks is configured like Flower's
    ``FedAvg``, which ones its sampler decides (``training_messages``, ``evaluation_messages``:
    Flower's own ``configure_train`` and ``configure_evaluate`` are not used).

    Parameters
    ----------
    initial
        The global model before the first round.
    sampler
        Draws each round's nodes by partition.
    wire_dtype
        What floating tensors of its messages travel as (``wire.dtype``; replies decode to
        float32, and the model stays float32 here).
    **fedavg_kwargs
        Flower ``FedAvg`` sampling settings (fraction_train, min_train_nodes, ...).
    """

    name: ClassVar[str]
    linear: ClassVar[bool]  # aggregation is a weighted sum of client updates (SecAgg-compatible)
    mixed_ranks: ClassVar[bool] = False
    # The global model includes a dense delta merged into the frozen base weights (which k-bit
    # weights cannot take).
    merges_into_base: ClassVar[bool] = False
    reply_kind: ClassVar[str] = "tensors"  # or "seed-steps": what a training reply carries
    # The frozen dataclass of the strategy's own options (``federated.config.option`` fields), set
    # as strategy.<name>.<option>; the registry checks them and hands them to ``from_config``.
    options: ClassVar[type | None] = None

    def __init__(
        self,
        initial: GlobalModel,
        *,
        sampler: PartitionSampler,
        wire_dtype: str = "float32",
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(
            weighted_by_key=keys.NUM_EXAMPLES,
            arrayrecord_key=keys.ARRAYS,
            configrecord_key=keys.CONFIG,
            **fedavg_kwargs,
        )
        self.model = initial
        self.pairs: list[LoraPair] = lora_pairs(initial.trainable)[0]  # none for seed sums
        self.sampler = sampler
        self.wire_dtype = wire_dtype

    @classmethod
    @abstractmethod
    def from_config(
        cls, config: RunConfig, initial: GlobalModel, options: Any, **fedavg_kwargs: Any
    ) -> FederatedStrategy:
        """This strategy for the run ``config``, with ``options``: its ``options`` dataclass as
        the run config sets it (None when it declares none)."""

    # -- what a round sends ------------------------------------------------------------------
    def train_payload(self) -> Payload:
        """The tensors and plan of a training round; by default the whole global model."""
        return Payload(self.model.trainable, self.model.base_delta, RoundPlan())

    def eval_payload(self) -> Payload:
        """What clients evaluate: the global model, with the plan's view of personal state."""
        return Payload(self.model.trainable, self.model.base_delta, RoundPlan())

    def reply_reference(self) -> Tensors:
        """What a sound training reply carries: these names, at most these shapes."""
        withheld = self.train_payload().plan.withheld(self.pairs)
        return {k: v for k, v in self.model.trainable.items() if k not in withheld}

    def training_messages(
        self, server_round: int, grid: Grid, pool: NodePool, shared: ConfigRecord
    ) -> list[Message]:
        """The round's training messages, to nodes drawn from ``pool``; ``shared``: what every
        message of the run carries (its run key; a zeroth-order run's rate)."""
        nodes = self._sample("train", server_round, grid, pool)
        return self.messages_to("train", server_round, nodes, shared)

    def evaluation_messages(
        self, server_round: int, grid: Grid, pool: NodePool, shared: ConfigRecord
    ) -> list[Message]:
        nodes = self._sample("evaluate", server_round, grid, pool)
        return self.messages_to("evaluate", server_round, nodes, shared)

    @abstractmethod
    def messages_to(
        self, kind: str, server_round: int, nodes: Sequence[int], shared: ConfigRecord
    ) -> list[Message]:
        """The round's ``kind`` ("train" or "evaluate") message for each of ``nodes``, each
        carrying ``shared``."""

    def connected_nodes(self, grid: Grid) -> list[int]:
        """The connected nodes, once ``min_available_nodes`` of them are (Flower's wait)."""
        return sample_nodes(grid, self.min_available_nodes, 0)[1]

    def _sample(self, kind: str, server_round: int, grid: Grid, pool: NodePool) -> list[int]:
        """The round's nodes: Flower's ``FedAvg`` count (the fraction of connected nodes, at
        least the minimum), drawn by partition from those ``pool`` has."""
        fraction, minimum = (
            (self.fraction_train, self.min_train_nodes)
            if kind == "train"
            else (self.fraction_evaluate, self.min_evaluate_nodes)
        )
        if fraction == 0.0:
            return []
        connected = self.connected_nodes(grid)
        size = max(int(len(connected) * fraction), minimum)
        chosen = self.sampler.sample(kind, server_round, connected, size, pool)
        log(
            INFO,
            "configure_%s: sampled %s nodes by partition (out of %s)",
            kind,
            len(chosen),
            len(connected),
        )
        return chosen

    def settle(self, kind: str, replies: Sequence[Message]) -> None:
        """What came back of the round's ``kind`` messages, whether it is aggregated or not:
        a strategy that tracks what each node holds learns it here; by default nothing to do."""

    # -- linear strategies: the aggregate as the mean of client deltas ------------------------
    @abstractmethod
    def client_delta(self, update: Mapping[str, torch.Tensor]) -> Tensors:
        """How far one client's upload moves the global model. A linear strategy's aggregate is
        the global model moved by the weighted mean of these (what client-level DP clips)."""

    @abstractmethod
    def apply_mean_delta(self, delta: Mapping[str, torch.Tensor]) -> None:
        """Move the global model by an aggregated delta (for linear strategies)."""

    def zero_delta(self) -> Tensors:
        """A delta that moves nothing, in the names and shapes of a client's delta."""
        return {k: torch.zeros_like(v) for k, v in self.reply_reference().items()}

    # -- aggregation -------------------------------------------------------------------------
    @abstractmethod
    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        """Fold the clients' uploads into ``self.model``."""

    def observe(self, updates: Sequence[Tensors]) -> None:
        """The clients' uploads as ``aggregate`` or a robust combination takes them in, for a
        strategy that keeps a record of them (FedKSeed-Pro); by default nothing to do. Client-
        level DP's private mean does not show them here: it releases nothing else."""

    def skip_train(self, replies: Sequence[Message]) -> None:
        """The round's replies will not be aggregated (too few were sound)."""
        self.settle("train", list(replies))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.fold_replies(replies, self.aggregate)

    def fold_replies(
        self,
        replies: Iterable[Message],
        fold: Callable[[list[Tensors], list[float]], None],
        *,
        when_empty: bool = False,
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check and log the round's replies (Flower's ``FedAvg``), ``fold`` their uploads and
        weights into the model (``aggregate``, or a wrapper's way) and average their metrics.
        With no sound reply the model moves only ``when_empty`` (a private round releases its
        noise alone)."""
        replies = list(replies)
        self.settle("train", replies)
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid and not when_empty:
            return None, None
        contents = [msg.content for msg in valid]
        updates = [record_to_tensors(c.array_records[keys.ARRAYS]) for c in contents]
        weights = [float(c.metric_records[keys.METRICS][keys.NUM_EXAMPLES]) for c in contents]
        fold(updates, weights)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key) if contents else None
        return tensors_to_record(self.model.trainable), metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        replies = list(replies)
        self.settle("evaluate", replies)
        return super().aggregate_evaluate(server_round, replies)

    def aggregate_secure(
        self,
        replies: Sequence[Message],
        sums: Mapping[str, torch.Tensor],
        weight: float,
        centred_unclipped: float | None,
        metrics: Mapping[str, float],
    ) -> MetricRecord | None:
        """Move the model by the mean update from SecAgg+'s sums alone: Σw·Δ / Σw
        (``centred_unclipped``, adaptive clipping's count, is client-level DP's). The round's
        statistics are ``metrics``, from the masked sum too."""
        return self.apply_secure_mean(replies, {k: v / weight for k, v in sums.items()}, metrics)

    def apply_secure_mean(
        self,
        replies: Sequence[Message],
        mean: Mapping[str, torch.Tensor],
        metrics: Mapping[str, float],
    ) -> MetricRecord | None:
        """Move the model by a mean update made from SecAgg+'s sum of ``replies`` (the summed
        clients' collect replies); the round's statistics are ``metrics``."""
        self.settle("train", list(replies))
        self.apply_mean_delta({k: v.to(torch.float32) for k, v in mean.items()})
        return MetricRecord(dict(metrics)) if metrics else None

    def aggregate_secure_evaluation(
        self, replies: Sequence[Message], metrics: Mapping[str, float]
    ) -> MetricRecord | None:
        """The round's held-out statistics from SecAgg+'s sum (``replies``: the summed
        clients' collect replies, whose statistics are masked)."""
        self.settle("evaluate", list(replies))
        return MetricRecord(dict(metrics)) if metrics else None

    # -- checkpoints -------------------------------------------------------------------------
    def state_tensors(self) -> Tensors:
        """The tensors a restarted server needs to go on: the global model, and what a subclass
        adds under ``STATE_PREFIX``."""
        return self.model.flat()

    def state_info(self) -> dict[str, Any]:
        """The rest of the strategy's state, as JSON (none by default)."""
        return {}

    def restore(self, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
        """Take up the state ``state_tensors`` and ``state_info`` gave; a ``ValueError`` when
        the model it holds is not this strategy's."""
        model = GlobalModel.from_flat(tensors)
        modules = {p.module for p in self.pairs}
        if _shapes(model.trainable) != _shapes(self.model.trainable) or not (
            set(model.base_delta) <= modules
        ):
            raise ValueError("the checkpoint's tensors are not this run's model")
        self.model = model

    # -- Flower ------------------------------------------------------------------------------
    def summary(self) -> None:
        log(INFO, "\t├──> Aggregation: %s (linear: %s)", self.name, self.linear)
        super().summary()
