"""Client-level DP as a wrapper around the strategy it protects (the mechanism: ``client_dp``).

The mechanism changes how a strategy samples (each client joins in secret at the accounted rate)
and aggregates (a clipped, noised mean over a fixed denominator); wrapping keeps that out of
every strategy, and gives the server what it reads of the privacy spent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from logging import INFO, WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from federated.protocol.global_model import Tensors
from strategies.client_dp import ClientLevelDp
from strategies.federated_strategy import FederatedStrategy
from strategies.node_pool import NodePool
from strategies.strategy_wrapper import StrategyWrapper


class ClientLevelDpStrategy(StrategyWrapper):
    """DP-FedAvg around ``inner``: training clients Poisson-sampled by ``mechanism`` among the
    available ones, each client's delta clipped and the sum noised, every round accounted.

    What it needs from the strategy it wraps: linear aggregation (its aggregate is its model
    moved by the weighted mean of the clients' deltas), ``client_delta`` (how far one upload
    moves the model), ``zero_delta`` (the names and shapes of a sum no client is in) and
    ``apply_mean_delta`` (move the model by a mean). ``strategies.registry`` refuses the
    others at build time.
    """

    releases_every_round = True  # every draw releases, its noise alone if no reply is sound

    def __init__(self, inner: FederatedStrategy, mechanism: ClientLevelDp) -> None:
        super().__init__(inner)
        self.mechanism = mechanism

    def training_messages(
        self, server_round: int, grid: Grid, pool: NodePool, shared: ConfigRecord
    ) -> list[Message]:
        """Each available node joins independently at the accounted rate, from a secret
        generator (Poisson sampling)."""
        available = pool.available("train", server_round, self.inner.connected_nodes(grid))
        chosen = self.mechanism.sample(available)
        log(
            INFO,
            "configure_train: Poisson-sampled %s nodes (out of %s)",
            len(chosen),
            len(available),
        )
        return self.inner.messages_to("train", server_round, chosen, shared)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # A draw without a sound reply still releases the noise, and is accounted.
        return self.inner.fold_replies(replies, self.aggregate, when_empty=True)

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        """The private mean of the uploads' deltas. Every client weighs the same: each one's
        influence is bounded by the clip, whatever it claims."""
        deltas = [self.inner.client_delta(u) for u in updates]
        mean = self.mechanism.aggregate(deltas, self.inner.zero_delta())
        self.inner.apply_mean_delta({k: v.to(torch.float32) for k, v in mean.items()})

    def aggregate_secure(
        self,
        replies: Sequence[Message],
        sums: Mapping[str, torch.Tensor],
        weight: float,
        centred_unclipped: float | None,
        metrics: Mapping[str, float],
    ) -> MetricRecord | None:
        """The private mean from SecAgg+'s sum of updates the clients clipped (each weighs 1);
        the noise joins the sum here."""
        mean = self.mechanism.from_sum(sums, centred_unclipped)
        return self.inner.apply_secure_mean(replies, mean, metrics)

    # -- what the server reads ---------------------------------------------------------------
    @property
    def clip_bound(self) -> float:
        """The bound each client's update is clipped to this round (it moves under adaptive
        clipping)."""
        return self.mechanism.bound

    def budget_allows(self, server_round: int) -> bool:
        """Whether ``server_round`` may spend one more round of ``dp.target-epsilon``; when
        not, says so in the log."""
        if self.mechanism.budget_allows():
            return True
        log(
            WARNING,
            "    client-level privacy budget: round %d would reach epsilon %.3g, past %.3g; "
            "training stops here",
            server_round,
            self.mechanism.epsilon_after_round(),
            self.mechanism.dp.target_epsilon,
        )
        return False

    def round_report(self) -> dict[str, Any]:
        """What the last round released about itself, and the epsilon spent so far."""
        report = self.mechanism.report()
        return {} if report is None else {f"client_dp_{k}": v for k, v in vars(report).items()}

    def round_without_sum(self, server_round: int) -> str | None:
        """Client-level DP releases every round: the noise alone, as for an empty draw."""
        centred = 0.0 if self.mechanism.dp.client.adaptive_clip else None
        self.aggregate_secure([], self.inner.zero_delta(), 0.0, centred, {})
        return "client-level DP: the round's noise moves the model alone"

    def describe(self) -> str:
        """The mechanism in one line, for the log at start."""
        m = self.mechanism
        return (
            f"client-level DP: each connected client joins a round with probability "
            f"{m.sample_rate:.3g} (secret Poisson sampling), noise multiplier "
            f"{m.noise_multiplier:.3g}, clip {m.bound:.3g}"
            + (" (adaptive)" if m.dp.client.adaptive_clip else "")
        )

    # -- checkpoints -------------------------------------------------------------------------
    def state_info(self) -> dict[str, Any]:
        """The strategy's state and the mechanism's: its ledger and bound."""
        return {"client-dp": self.mechanism.state(), **self.inner.state_info()}

    def restore(self, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
        self.inner.restore(tensors, info)
        self.mechanism.restore(info["client-dp"])
