"""The L2 clipping of an update made of named tensors (client-level DP, on either side)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def update_norm(delta: Mapping[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in delta.values()))


def clip_update(delta: Mapping[str, torch.Tensor], bound: float) -> dict[str, torch.Tensor]:
    """The update scaled into the L2 ball of radius ``bound`` (unchanged when inside)."""
    factor = min(1.0, bound / max(update_norm(delta), 1e-12))
    return {k: v * factor for k, v in delta.items()}
