"""The time a run has left, estimated from the round times it publishes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class RoundTimes:
    """The seconds each published round took (a resumed run's earlier rounds included); under
    client-level DP a round's time is withheld, and the run makes no estimate."""

    def __init__(self, rounds: Iterable[Mapping[str, Any]] = ()) -> None:
        self.seconds: list[float] = []
        for record in rounds:
            self.add(record)

    def add(self, record: Mapping[str, Any]) -> None:
        if record.get("round_seconds") is not None:
            self.seconds.append(float(record["round_seconds"]))

    def left(self, rounds_left: int) -> float | None:
        """The mean round time so far times the rounds left; None before any round's time or
        after the last round."""
        if not self.seconds or rounds_left <= 0:
            return None
        return sum(self.seconds) / len(self.seconds) * rounds_left


def duration(seconds: float) -> str:
    """``seconds`` in the unit a person reads at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
