"""What the server reads of a strategy's privacy mechanism, with the answers of a strategy that
has none. The client-level and distributed DP wrappers override them; the round loop and the
SecAgg+ round ask every strategy the same questions instead of asking which one it is."""

from __future__ import annotations

from typing import Any

from federated.privacy.distributed_noise import DistributedPlan


class PrivacyHooks:
    """A strategy without a server-side privacy mechanism: nothing to account, nothing to add."""

    # A round whose replies are too few (or whose secure sum failed) still releases something
    # (client-level DP's noise), so it counts as a round.
    releases_every_round: bool = False

    def budget_allows(self, server_round: int) -> bool:
        """Whether ``server_round`` may run under the privacy budget (it logs why not)."""
        return True

    def describe(self) -> str | None:
        """The mechanism in one line, for the log at start."""
        return None

    def round_report(self) -> dict[str, Any]:
        """What the last round released about itself, as ``metrics.jsonl`` keys."""
        return {}

    @property
    def clip_bound(self) -> float | None:
        """The L2 bound each client's update is clipped to this round; None: no clipping."""
        return None

    @property
    def distributed_plan(self) -> DistributedPlan | None:
        """The noise the clients add under SecAgg+ (distributed DP); None: they add none."""
        return None

    def sum_may_be_revealed(self, server_round: int) -> None:
        """SecAgg+ is about to ask for the shares that can unmask ``server_round``'s sum."""

    def round_without_sum(self, server_round: int) -> str | None:
        """A SecAgg+ round ended without a sum: what the mechanism does then, as a log line,
        or None when the global model simply stays."""
        return None
