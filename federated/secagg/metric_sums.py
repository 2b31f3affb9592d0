"""A client's statistics inside the SecAgg+ mask: the server learns only their sums.

Without DP, a client's record count, loss, steps, time and memory (and, when it evaluates, its
held-out loss and accuracy) are exact functions of its data; sent in the clear beside a masked
update they would say what the mask hides. So they travel as extra integer entries of the
masked vector, each in fixed point:

- its record count, as it is (the server learns the round's total);
- every other statistic m as w·m in the statistic's own unit, w being the client's weight, which
  leads its vector as an exact integer too (``weight_entry``: millionths),

and the server gets the round's record count and each statistic's weighted mean Σw·m / Σw, as
Flower's weighted average of plain metrics would give. Each entry is at most ``ENTRY_CAP``, so a
sum of up to ``MAX_CLIENTS`` clients cannot wrap modulo 2^32.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from federated.protocol import message_keys as keys
from federated.secagg.masking import MOD

ENTRY_CAP = 1_000_000
MAX_CLIENTS = MOD // (1 << 20)  # 4096: 2^20 > ENTRY_CAP
_WEIGHT_SCALE = 1e6
# Each statistic's units per entry, and the largest value kept (larger ones are capped there).
_UNITS = {
    keys.TRAIN_LOSS: (1e4, 100.0),
    keys.TRAIN_STEPS: (1.0, 1e6),
    keys.TRAIN_SECONDS: (100.0, 1e4),
    keys.PEAK_MEMORY_MB: (1.0, 1e6),
    keys.EVAL_LOSS: (1e4, 100.0),
    keys.EVAL_PERPLEXITY: (1.0, 1e6),
    keys.EVAL_ACCURACY: (1e6, 1.0),
    keys.EVAL_GLOBAL_LOSS: (1e4, 100.0),
    keys.EVAL_GLOBAL_ACCURACY: (1e6, 1.0),
}


def statistics(metric_keys: Iterable[str]) -> tuple[str, ...]:
    """The statistics of a reply with ``metric_keys`` that travel weighted, in wire order."""
    return tuple(sorted(k for k in metric_keys if k in _UNITS))


def weight_entry(weight: float) -> int:
    """A client's weight w in [0, 1] as the exact integer that leads its vector."""
    return round(min(max(float(weight), 0.0), 1.0) * _WEIGHT_SCALE)


def summed_weight(entry: int) -> float:
    """Σw from the sum of the clients' weight entries."""
    return float(entry) / _WEIGHT_SCALE


def entries(names: tuple[str, ...]) -> int:
    """The entries ``encode_metrics`` appends: the count, one per statistic."""
    return 1 + len(names)


def encode_metrics(
    metrics: Mapping[str, float], weight: float, names: tuple[str, ...]
) -> np.ndarray:
    """The entries a client appends to its vector; ``weight`` is its w in [0, 1]."""
    w = weight_entry(weight) / _WEIGHT_SCALE
    out = [min(max(float(metrics[keys.NUM_EXAMPLES]), 0.0), ENTRY_CAP)]
    for name in names:
        scale, largest = _UNITS[name]
        out.append(w * min(max(float(metrics[name]), 0.0), largest) * scale)
    return np.rint(out).astype(np.int64)


def decode_metrics(totals: np.ndarray, names: tuple[str, ...], weight: float) -> dict[str, float]:
    """The round's statistics from the summed entries and Σw: the total record count and each
    statistic's weighted mean (none when the summed weight is 0)."""
    totals = np.asarray(totals, dtype=np.int64)
    out = {keys.NUM_EXAMPLES: float(totals[0])}
    if weight > 0:
        for name, total in zip(names, totals[1:], strict=True):
            out[name] = float(total) / _UNITS[name][0] / weight
    return out
