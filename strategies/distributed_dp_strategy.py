"""Distributed DP as a wrapper around the strategy it protects (the mechanism: ``distributed_dp``).

It samples and divides as client-level DP does, but the noise comes with the clients' masked
updates, so the server's side is the plan they follow, and counting each round once its sum may
be revealed: that is what the SecAgg+ round reads from it.
"""

from __future__ import annotations

from federated.privacy.distributed_noise import DistributedPlan
from strategies.client_dp_strategy import ClientLevelDpStrategy
from strategies.distributed_dp import DistributedClientDp


class DistributedDpStrategy(ClientLevelDpStrategy):
    """Client-level DP whose noise the clients add under SecAgg+ (``dp.mode = distributed``).

    What it needs from the strategy it wraps: what ``ClientLevelDpStrategy`` needs. It
    aggregates only SecAgg+ sums, which the run config's check of ``dp.mode`` already asks for.
    """

    mechanism: DistributedClientDp

    @property
    def distributed_plan(self) -> DistributedPlan:
        """The noise each client adds, the clients it was sized for and the field's room."""
        return self.mechanism.plan

    def sum_may_be_revealed(self, server_round: int) -> None:
        """The round counts from here on, released or not (once: counting it again changes
        nothing)."""
        self.mechanism.spend_round(server_round)

    def round_without_sum(self, server_round: int) -> str | None:
        self.mechanism.spend_round(server_round)
        return "distributed DP: nothing released; the round still counts"

    def describe(self) -> str:
        plan = self.distributed_plan
        return (
            f"distributed DP: each connected client joins a round with probability "
            f"{self.mechanism.sample_rate:.3g} (secret Poisson sampling), clips to "
            f"{plan.clip:.3g} and adds discrete Gaussian noise of std {plan.local_std:.4g} "
            f"(in units of {plan.granularity:.3g}, its rounded norm at most {plan.bound:.4g}) "
            f"sized for {plan.min_clients} clients: noise multiplier "
            f"{plan.noise_multiplier:.3g} at that count; a sum of fewer is never unmasked"
        )
