"""What a run publishes about a round under client-level DP, and what only its operator sees.

Client-level DP covers the model and what its mechanism releases about itself (the clip bound,
the noised share of unclipped clients, the expected count q·N, epsilon). Everything else the
round loop knows is an exact function of the sampled clients' data (whether a reply was
rejected, what it weighed) or of the secret sample (who was sampled, how many, their bytes, how
long the round took): amplification by sampling holds only while the sample stays secret. The
clients compute no loss or held-out metric for the server (``dp.quiet_clients``). So under
client-level DP, ``metrics.jsonl`` (and from it ``summary.json`` and ``loss.png``) holds only
the released quantities and the test metrics of the noised model on the server's own test set,
and ``operator.jsonl`` the complete record: the server operator's own log, as private as the
server itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federated.config import RunConfig
from federated.results import Withhold

RELEASED_KEYS = frozenset({"round", "aggregation_seconds", "test_seconds", "nodes_left_out"})
RELEASED_PREFIXES = ("test_", "client_dp_")


def released_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a round's record that client-level DP lets the run publish."""
    return {
        k: v for k, v in record.items() if k in RELEASED_KEYS or k.startswith(RELEASED_PREFIXES)
    }


def withhold_for(config: RunConfig) -> Withhold | None:
    """How the run's results withhold what its privacy does not cover; None: nothing."""
    return released_record if config.dp.client_level else None
