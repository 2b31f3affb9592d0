"""A strategy around another, as Flower's DP wrappers are: what it does not change, it forwards.

Client-level DP, distributed DP and robust aggregation each change how any strategy that fits
them samples or aggregates. As wrappers they are written once, outside the strategies, instead
of as branches inside every one; the server holds the outermost and reads only what this class
forwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from federated.model.lora import LoraPair
from federated.protocol.global_model import GlobalModel, Tensors
from strategies.federated_strategy import FederatedStrategy, Payload
from strategies.node_pool import NodePool
from strategies.privacy_hooks import PrivacyHooks


class StrategyWrapper(PrivacyHooks):
    """Forwards everything the server asks of a strategy to ``inner``; a subclass overrides
    what it changes. Wrappers do not nest, so the privacy hooks are the wrapper's own (those of
    no mechanism unless it is one)."""

    def __init__(self, inner: FederatedStrategy) -> None:
        self.inner = inner

    # -- what the strategy is ----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def linear(self) -> bool:
        return self.inner.linear

    @property
    def mixed_ranks(self) -> bool:
        return self.inner.mixed_ranks

    @property
    def reply_kind(self) -> str:
        return self.inner.reply_kind

    @property
    def pairs(self) -> list[LoraPair]:
        return self.inner.pairs

    @property
    def model(self) -> GlobalModel:
        return self.inner.model

    # -- what a round sends and takes back ---------------------------------------------------
    def train_payload(self) -> Payload:
        return self.inner.train_payload()

    def eval_payload(self) -> Payload:
        return self.inner.eval_payload()

    def reply_reference(self) -> Tensors:
        return self.inner.reply_reference()

    def training_messages(
        self, server_round: int, grid: Grid, pool: NodePool, shared: ConfigRecord
    ) -> list[Message]:
        return self.inner.training_messages(server_round, grid, pool, shared)

    def evaluation_messages(
        self, server_round: int, grid: Grid, pool: NodePool, shared: ConfigRecord
    ) -> list[Message]:
        return self.inner.evaluation_messages(server_round, grid, pool, shared)

    # -- aggregation -------------------------------------------------------------------------
    def client_delta(self, update: Mapping[str, torch.Tensor]) -> Tensors:
        return self.inner.client_delta(update)

    def apply_mean_delta(self, delta: Mapping[str, torch.Tensor]) -> None:
        self.inner.apply_mean_delta(delta)

    def zero_delta(self) -> Tensors:
        return self.inner.zero_delta()

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        self.inner.aggregate(updates, weights)

    def skip_train(self, replies: Sequence[Message]) -> None:
        self.inner.skip_train(replies)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def aggregate_secure(
        self,
        replies: Sequence[Message],
        sums: Mapping[str, torch.Tensor],
        weight: float,
        centred_unclipped: float | None,
        metrics: Mapping[str, float],
    ) -> MetricRecord | None:
        return self.inner.aggregate_secure(replies, sums, weight, centred_unclipped, metrics)

    def aggregate_secure_evaluation(
        self, replies: Sequence[Message], metrics: Mapping[str, float]
    ) -> MetricRecord | None:
        return self.inner.aggregate_secure_evaluation(replies, metrics)

    # -- checkpoints -------------------------------------------------------------------------
    def state_tensors(self) -> Tensors:
        return self.inner.state_tensors()

    def state_info(self) -> dict[str, Any]:
        return self.inner.state_info()

    def restore(self, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
        self.inner.restore(tensors, info)


# What the server runs: a strategy, or a wrapper around one.
Strategy: TypeAlias = FederatedStrategy | StrategyWrapper
