"""Record-level DP's own defaults: the settings that ``benchmarks/privacy/sweep.py`` found to keep
the most accuracy under DP-SGD, taken by a record-level DP run of LoRA for every option it
leaves at the schema's default (``dp.tuned-defaults``).

The schema's defaults suit training without noise (small batches, a few steps); under DP-SGD
the noise added to each step is fixed while the signal grows with the batch, so a private run
wants large expected batches, taken in virtual steps that fit in memory, and the rate and step
count that go with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The sweep's best on MiniLM-L6/WordNet (20 clients, ~580 records each, epsilon 3), see
# benchmarks/README.md: an expected batch of 64 in virtual steps of 16.
TUNED_RECORD_LEVEL: dict[str, Any] = {
    "train.batch-size": 64,
    "dp.physical-batch": 16,
    "train.local-steps": 8,
    "train.lr": 1e-2,
}
TUNED_TEXT = ", ".join(f"{key} {value}" for key, value in TUNED_RECORD_LEVEL.items())


def tuned_dp_defaults(raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``raw`` (a flat run config) that take the sweep's value, with that value:
    those it leaves at their default in ``defaults`` (absent, or equal to it), when it asks for
    record-level DP of LoRA and does not turn ``dp.tuned-defaults`` off."""

    def value(key: str) -> Any:
        return raw.get(key, defaults[key])

    if not (value("dp.record-level") and value("dp.tuned-defaults") and value("mode") == "lora"):
        return {}
    return {k: v for k, v in TUNED_RECORD_LEVEL.items() if value(k) == defaults[k]}


def tuned_dp_defaults_line(tuned: Mapping[str, Any]) -> str:
    """The line a run logs when it takes tuned defaults (``tuned`` from ``tuned_dp_defaults``)."""
    taken = ", ".join(f"{key}={value}" for key, value in tuned.items())
    return (
        "record-level DP takes its tuned defaults (dp.tuned-defaults=false keeps the schema's): "
        + taken
    )
