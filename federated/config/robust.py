"""The robust-aggregation section: how strategies that average resist poisoned updates."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class RobustSettings:
    method: str = option(
        "none",
        "What replaces the weighted mean of client deltas: none, norm-bound (each delta clipped), "
        "median or trimmed-mean (per coordinate), krum or multi-krum (the most central "
        "clients). Strategies that average only (fedavg, ffa-lora, fedsa-lora, fedkseed).",
        choices=("none", "norm-bound", "median", "trimmed-mean", "krum", "multi-krum"),
    )
    norm_bound: float = option(
        0.0, "norm-bound: the L2 bound of a client's delta (0: the round's median).", minimum=0.0
    )
    trim_fraction: float = option(
        0.2,
        "trimmed-mean: share of the largest and of the smallest values dropped per coordinate.",
        minimum=0.0,
        maximum=0.49,
    )
    byzantine_clients: int = option(
        1, "krum, multi-krum: how many hostile clients a round may hold (f).", minimum=0
    )
