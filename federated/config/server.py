"""The server section: how long a round waits, which updates it rejects."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class ServerSettings:
    round_timeout: float = option(3600.0, "Seconds to wait for the replies of a round.", above=0.0)
    max_update_norm: float = option(
        1e4,
        "Reject a reply whose update has an L2 norm above this (a poisoned or diverged client).",
        above=0.0,
    )
