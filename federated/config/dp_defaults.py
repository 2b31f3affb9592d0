"""The settings a run may leave to fedtune (``auto``), and what each resolves to.

``train.batch-size``, ``train.local-steps``, ``train.lr`` and ``dp.record.physical-batch``
default to an auto value that no one sets by accident (0, or -1 where 0 already means something).
A record-level DP run of LoRA resolves them to the settings that ``benchmarks/privacy/sweep.py``
found to keep the most accuracy under DP-SGD; every other run to the settings that suit training
without noise. A value the user writes is never replaced: Flower hands the app its run config
merged with pyproject's defaults, so only a value reserved for "left to fedtune" can say that it
was left.

Under DP-SGD the noise added to each step is fixed while the signal grows with the batch, so a
private run wants large expected batches, taken in virtual steps that fit in memory, and the rate
and step count that go with them; the same batch would only slow a run without noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Without DP noise: small batches and a few steps, cheap on a CPU.
PLAIN: dict[str, Any] = {
    "train.batch-size": 4,
    "dp.record.physical-batch": 0,
    "train.local-steps": 5,
    "train.lr": 1e-3,
}
# The sweep's best on MiniLM-L6/WordNet (20 clients, ~580 records each, epsilon 3), see
# benchmarks/README.md: an expected batch of 64 in virtual steps of 16.
TUNED_RECORD_LEVEL: dict[str, Any] = {
    "train.batch-size": 64,
    "dp.record.physical-batch": 16,
    "train.local-steps": 8,
    "train.lr": 1e-2,
}
TUNED_FOR = "record-level DP of LoRA"


def auto_help(key: str) -> str:
    """How the auto value of ``key`` resolves, for its help text."""
    tuned, plain = TUNED_RECORD_LEVEL[key], PLAIN[key]
    return f"auto: {tuned} under {TUNED_FOR}, the privacy sweep's best, else {plain}"


def _tuned(flat: Mapping[str, Any]) -> bool:
    return flat["dp.mode"] == "record" and flat["mode"] == "lora"


def auto_values(flat: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that ``flat`` (a whole flat run config, each value already valid) leaves at
    their auto value (``defaults``, the schema's), with what each resolves to.

    ``train.local-steps`` = 0 with ``train.local-epochs`` set counts the steps from the epochs:
    it is auto only when no epochs are set.
    """
    table = TUNED_RECORD_LEVEL if _tuned(flat) else PLAIN
    if flat["dp.mode"] != "record":  # the record-level options stay unset outside their mode
        table = {key: value for key, value in table.items() if not key.startswith("dp.record.")}
    left = {key: value for key, value in table.items() if flat[key] == defaults[key]}
    if flat["train.local-epochs"] != defaults["train.local-epochs"]:
        left.pop("train.local-steps", None)
    return left


def auto_values_line(flat: Mapping[str, Any], defaults: Mapping[str, Any]) -> str | None:
    """The line a record-level DP run of LoRA logs for the auto settings it resolves to the
    sweep's (as ``auto_values``); None for other runs, and for one that sets them all."""
    taken = auto_values(flat, defaults)
    if not (taken and _tuned(flat)):
        return None
    values = ", ".join(f"{key}={value}" for key, value in taken.items())
    return (
        f"auto settings, the privacy sweep's best for {TUNED_FOR}: {values}; a value set in "
        "the run config is kept"
    )
