"""A run's time across resumes: wall time from its first launch, and the seconds it ran.

A resumed run is one run: its summary's ``wall_seconds`` spans from the first launch to the end,
time between a crash and the resume included, and ``running_seconds`` adds the launches' time up
to each one's last checkpoint (work after it was lost and done again). Both travel in the
checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunClock:
    started_at: float = field(default_factory=time.time)  # the first launch, Unix time
    ran_before: float = 0.0  # seconds the earlier launches ran, up to their last checkpoint
    resumes: int = 0
    launched: float = field(default_factory=time.perf_counter)

    @classmethod
    def resumed_from(cls, state: Mapping[str, Any]) -> RunClock:
        """The clock a checkpoint's state carries (a checkpoint without one: from now)."""
        if "started-at" not in state:
            return cls(resumes=1)
        return cls(
            float(state["started-at"]),
            float(state["running-seconds"]),
            int(state.get("resumes", 0)) + 1,
        )

    def running_seconds(self) -> float:
        return self.ran_before + time.perf_counter() - self.launched

    def state(self) -> dict[str, float | int]:
        """What a checkpoint keeps of the clock."""
        return {
            "started-at": self.started_at,
            "running-seconds": self.running_seconds(),
            "resumes": self.resumes,
        }

    def summary(self) -> dict[str, float | int]:
        return {
            "wall_seconds": time.time() - self.started_at,
            "running_seconds": self.running_seconds(),
            "resumes": self.resumes,
        }
