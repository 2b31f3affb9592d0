"""Robust aggregation as a wrapper around the strategy it protects (the math:
``robust_aggregation``).

A robust method replaces the mean of the clients' deltas that a linear strategy's aggregate
is; as a wrapper it is written once for every such strategy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from flwr.app import ArrayRecord, Message, MetricRecord

from federated.config import RobustSettings
from federated.protocol.global_model import Tensors
from strategies.federated_strategy import FederatedStrategy
from strategies.robust_aggregation import ROBUST_AGGREGATES
from strategies.strategy_wrapper import StrategyWrapper


class RobustAggregation(StrategyWrapper):
    """``inner`` moved by a robust combination of its clients' deltas (``robust.method``)
    instead of their mean.

    What it needs from the strategy it wraps: linear aggregation (its aggregate is its model
    moved by the weighted mean of the clients' deltas), ``client_delta`` (how far one upload
    moves the model), ``apply_mean_delta`` (move the model by a combination) and ``observe``
    (the uploads, for a strategy that keeps a record of them). ``strategies.registry`` refuses
    the others at build time, and client-level DP and SecAgg+ beside it.
    """

    def __init__(self, inner: FederatedStrategy, settings: RobustSettings) -> None:
        super().__init__(inner)
        self.settings = settings

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.fold_replies(replies, self.aggregate)

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        self.inner.observe(updates)
        deltas = [self.inner.client_delta(u) for u in updates]
        combine = ROBUST_AGGREGATES[self.settings.method]
        self.inner.apply_mean_delta(combine(deltas, weights, self.settings))
