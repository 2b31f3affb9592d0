"""How far AdamW can move one weight in a round: a bound the server checks replies against.

Clients train with torch's AdamW at these betas. Its step on a weight is lr·m̂_t/(√v̂_t + eps),
and by Cauchy–Schwarz on the moment estimates,

    |m̂_t| / √v̂_t ≤ (1 − β1)/(1 − β1^t) · √((1 − β2^t)/(1 − β2)) · √(Σ_{k<t} (β1²/β2)^k)

whatever the gradients were (1 at t = 1, about 7.3 in the limit for the default betas); decoupled
weight decay adds lr·wd·|w| a step. So no gradient, clipped, noised or poisoned, lets an honest
client move a weight further than the sum over its steps, which turns "+50 on every entry" from
plausible into impossible.
"""

from __future__ import annotations

import math

ADAMW_BETAS = (0.9, 0.999)


def adam_step_factor(step: int, betas: tuple[float, float] = ADAMW_BETAS) -> float:
    """The largest |m̂/√v̂| at the ``step``-th step (1-based), over all gradient sequences."""
    beta1, beta2 = betas
    ratio = beta1**2 / beta2
    history = step if ratio == 1 else (1 - ratio**step) / (1 - ratio)
    return (
        (1 - beta1) / (1 - beta1**step) * math.sqrt((1 - beta2**step) / (1 - beta2))
    ) * math.sqrt(history)


def adamw_max_move(lr: float, steps: int, weight_decay: float, start: float) -> float:
    """The furthest ``steps`` AdamW steps at ``lr`` can move a weight that starts at most
    ``start`` from zero."""
    moved = 0.0
    for step in range(1, steps + 1):
        moved += lr * (adam_step_factor(step) + weight_decay * (start + moved))
    return moved
