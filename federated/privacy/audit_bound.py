"""The empirical lower bound on epsilon of one-run privacy auditing (Steinke, Nasr and
Jagielski, 2023: "Privacy Auditing with One (1) Training Run").

m canaries are each inserted into the training data with probability 1/2, independently; after
training, an attacker guesses for r of them whether they were inserted and abstains on the rest.
If training is (ε, δ)-DP, the number V of correct guesses is stochastically dominated by
Binomial(r, q) with q = e^ε / (1 + e^ε), up to a δ term: for every v,

    P[V ≥ v] ≤ β + 2·m·δ·α,   β = P[Binomial(r, q) ≥ v],
    α = max over i in 1..v of P[v − i ≤ Binomial(r, q) < v] / i.

A run whose attacker got v right is then not (ε, δ)-DP for any ε whose bound falls below the
chosen significance: the largest such ε is the audit's lower bound, at that confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import binom


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """The probability of at least ``v`` correct guesses out of ``r`` (``m`` canaries) under an
    (ε, δ)-DP training run: the bound above, capped at 1."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if epsilon < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need epsilon >= 0 and delta in [0, 1], got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(binom.sf(v - 1, r, q))
    alpha, below = 0.0, 0.0
    for i in range(1, v + 1):
        below += float(binom.pmf(v - i, r, q))  # P[v - i <= Binomial < v]
        alpha = max(alpha, below / i)
    return min(1.0, beta + 2 * m * delta * alpha)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, significance: float = 0.05) -> float:
    """The largest ε that ``v`` correct guesses of ``r`` rule out at ``significance`` (0 when
    they rule out none), by bisection to 1e-6."""
    if not 0 < significance < 1:
        raise ValueError(f"significance must be in (0, 1), got {significance}")
    if p_value(m, r, v, 0.0, delta) >= significance:
        return 0.0
    low, high = 0.0, 1.0
    while p_value(m, r, v, high, delta) < significance:
        low, high = high, 2 * high
    while high - low > 1e-6:
        mid = (low + high) / 2
        low, high = (mid, high) if p_value(m, r, v, mid, delta) < significance else (low, mid)
    return low


def audit_epsilon(
    inserted: Sequence[bool],
    scores: Sequence[float],
    guesses: Sequence[int],
    delta: float,
    significance: float = 0.05,
) -> tuple[float, int, int]:
    """The best bound over guess counts: for each r in ``guesses``, the r canaries the model
    scores highest (most likely inserted) are guessed inserted, half of them, and the lowest,
    the other half, held out. Trying several r is several tests, so each is run at
    ``significance`` / len(guesses) (a union bound). Returns (ε bound, r, correct guesses)."""
    m = len(inserted)
    if len(scores) != m:
        raise ValueError(f"{m} canaries but {len(scores)} scores")
    order = sorted(range(m), key=lambda i: scores[i], reverse=True)
    each = significance / len(guesses)
    best = (0.0, 0, 0)
    for r in guesses:
        if not 0 < r <= m:
            raise ValueError(f"a guess count must be in 1..{m}, got {r}")
        high, low = order[: (r + 1) // 2], order[m - r // 2 :] if r // 2 else []
        correct = sum(inserted[i] for i in high) + sum(not inserted[i] for i in low)
        bound = epsilon_lower_bound(m, r, correct, delta, each)
        if bound > best[0]:
            best = (bound, r, correct)
    return best
