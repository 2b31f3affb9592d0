"""Discrete Gaussian noise on the integers: P(x) ∝ exp(−x²/2σ²), x ∈ ℤ.

Sampled by Canonne, Kamath and Steinke's rejection from a discrete Laplace of scale t = ⌊σ⌋ + 1
(https://arxiv.org/abs/2004.00010, Algorithm 3), vectorized: a candidate Y = G₁ − G₂ (two
geometric counts of failures at success rate 1 − e^{−1/t}) is kept with probability
exp(−(|Y| − σ²/t)² / 2σ²). The acceptance test runs in float64, not in exact arithmetic: the
distribution is the discrete Gaussian up to float64 rounding of those probabilities.
"""

from __future__ import annotations

import math

import numpy as np


def discrete_gaussian(size: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``size`` independent draws of the discrete Gaussian of parameter ``sigma``, as int64."""
    if sigma <= 0:
        return np.zeros(size, dtype=np.int64)
    t = math.floor(sigma) + 1
    success = -math.expm1(-1.0 / t)
    out = np.empty(size, dtype=np.int64)
    missing = np.arange(size)
    while missing.size:
        y = rng.geometric(success, missing.size) - rng.geometric(success, missing.size)
        keep = rng.random(missing.size) < np.exp(
            -((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2)
        )
        out[missing[keep]] = y[keep]
        missing = missing[~keep]
    return out
