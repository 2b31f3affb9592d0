"""Distributed discrete Gaussian (Kairouz, Liu and Steinke, 2021, https://arxiv.org/abs/2102.06387):
client-level DP whose noise the clients add under SecAgg+, so that no party sees a noise-free sum.

Each client clips its update to L2 norm S, divides it by the granularity γ, rounds it to
integers at random until the rounded vector's norm is within Δ (conditional randomized rounding,
which bounds the sensitivity after rounding), and adds discrete Gaussian noise of parameter σ to
every entry. A round's sum over k clients then carries the sum of k discrete Gaussians, within τ
of a discrete Gaussian of variance kσ² (the paper's Theorem 1). The noise is planned for
``min_clients``: a sum of fewer is never unmasked, a sum of more only has more noise.

Accounting, per round: the discrete Gaussian's Rényi DP at integer orders α (the paper's
Proposition 14, τ included), Poisson-subsampled at the clients' rate q with Zhu and Wang's
general upper bound (2019, https://arxiv.org/abs/1808.00087, Theorem 6), which holds for any
mechanism (opacus's accountant computes the subsampled *continuous* Gaussian only); rounds
compose by adding RDP, and opacus converts RDP to (ε, δ).

Modular wrap-around: entries are summed modulo 2^32. The scale S/γ is set so that
``max_clients`` clients' vectors (each entry at most Δ) plus 12 standard deviations of their
summed noise stay within ±2^31: a wrap then needs a 12σ tail (probability below 1e-31 an entry).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from opacus.accountants.analysis import rdp as rdp_analysis
from scipy import special

from federated.config import RunConfig
from federated.privacy.accounting import BudgetUnreachable

ORDERS = tuple(range(2, 65)) + (80, 96, 128, 192, 256)
# Conditional rounding retries while the rounded norm exceeds Δ; β bounds how often (Kairouz et
# al. use e^-0.5: at most 1 / (1 − β) ≈ 2.5 draws expected).
ROUNDING_BETA = math.exp(-0.5)
TAIL_STDS = 12.0
HALF_FIELD = 2**31 - 1
# The most clients one sum may hold: the scale leaves room for them (their rounded vectors cost
# under 1e-5 of the sensitivity in rounding at a million entries), a larger sample is refused.
MAX_CLIENTS = 10_000


def subsampled_rdp(order: int, rate: float, rdp: Callable[[int], float]) -> float:
    """An upper bound on the RDP at ``order`` of a mechanism of RDP ``rdp`` run on a Poisson
    subsample at ``rate`` (Zhu and Wang, Theorem 6)."""
    if rate >= 1.0:
        return rdp(order)
    a, q = order, rate
    logs = [(a - 1) * math.log1p(-q) + math.log(a * q - q + 1)]
    weights = [1.0]
    logs.append(math.log(special.comb(a, 2)) + 2 * math.log(q) + (a - 2) * math.log1p(-q) + rdp(2))
    weights.append(1.0)
    for j in range(3, a + 1):
        log_comb = special.gammaln(a + 1) - special.gammaln(j + 1) - special.gammaln(a - j + 1)
        logs.append(log_comb + j * math.log(q) + (a - j) * math.log1p(-q) + (j - 1) * rdp(j))
        weights.append(3.0)
    bound = float(special.logsumexp(logs, b=weights)) / (a - 1)
    return min(bound, rdp(order))


def rounded_bound(scaled_clip: float, dimension: int) -> float:
    """Δ: the L2 norm conditional rounding keeps a vector of norm ``scaled_clip`` (in units of
    γ) within, and so the sensitivity after rounding (the paper's Theorem 1)."""
    c, d = scaled_clip, dimension
    loose = (c + math.sqrt(d)) ** 2
    tight = c**2 + d / 4 + math.sqrt(2 * math.log(1 / ROUNDING_BETA)) * (c + math.sqrt(d) / 2)
    return math.sqrt(min(loose, tight))


def sum_distance(local_std: float, clients: int) -> float:
    """τ: how far a sum of ``clients`` discrete Gaussians of parameter ``local_std`` is from one
    discrete Gaussian (the paper's Theorem 1)."""
    return 10 * sum(
        math.exp(-2 * math.pi**2 * local_std**2 * k / (k + 1)) for k in range(1, clients)
    )


def discrete_gaussian_rdp(order: int, scale: float, tau: float, dimension: int) -> float:
    """RDP of the (summed) discrete Gaussian at ``order``, ``scale`` = sensitivity / total std."""
    first = order * scale**2 / 2 + tau * dimension
    second = order / 2 * (scale + math.sqrt(dimension) * tau) ** 2
    return min(first, second)


@dataclass(frozen=True)
class DistributedPlan:
    """What every client and the server agree on for one run: all from the run config and the
    update's dimension, so that a client never takes its noise from the server's word."""

    clip: float  # S, in the update's units
    granularity: float  # γ: the update's units per integer
    bound: float  # Δ, in integers: the rounded vector's L2 norm at most
    local_std: float  # σ of each client's discrete Gaussian, in integers
    min_clients: int  # the fewest clients whose sum may be unmasked
    max_clients: int  # the most clients a sum may hold without risking a wrap
    sample_rate: float
    dimension: int
    delta: float

    @property
    def noise_multiplier(self) -> float:
        """The summed noise's std over the sensitivity at ``min_clients``: what a central
        Gaussian mechanism would call its multiplier."""
        return self.local_std * math.sqrt(self.min_clients) / self.bound

    def round_rdp(self, sample_rate: float) -> np.ndarray:
        tau = sum_distance(self.local_std, self.min_clients)
        scale = 1 / self.noise_multiplier
        base = lambda order: discrete_gaussian_rdp(order, scale, tau, self.dimension)  # noqa: E731
        return np.array([subsampled_rdp(a, sample_rate, base) for a in ORDERS])

    def epsilon(self, rounds: int, sample_rate: float | None = None) -> float:
        """ε after ``rounds`` rounds at the plan's δ (0 before any), at the plan's sampling rate
        or at ``sample_rate`` (1.0: against a party that knows who was sampled)."""
        rate = self.sample_rate if sample_rate is None else sample_rate
        return epsilon_of(self.round_rdp(rate) * rounds, self.delta) if rounds else 0.0


def epsilon_of(rdp: np.ndarray, delta: float) -> float:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(rdp_analysis.get_privacy_spent(orders=list(ORDERS), rdp=rdp, delta=delta)[0])


def _scale_for(multiplier: float, dimension: int, min_clients: int, max_clients: int) -> float:
    """The largest S/γ whose ``max_clients`` rounded vectors and summed noise stay in the field."""

    def room(c: float) -> float:
        bound = rounded_bound(c, dimension)
        noise = TAIL_STDS * multiplier * bound * math.sqrt(max_clients / min_clients)
        return HALF_FIELD - max_clients * bound - noise

    low, high = 1.0, float(HALF_FIELD)
    if room(low) <= 0:
        raise BudgetUnreachable(
            f"{max_clients} clients of dimension {dimension} do not fit the 32-bit field"
        )
    for _ in range(200):
        mid = math.sqrt(low * high)
        low, high = (mid, high) if room(mid) > 0 else (low, mid)
    return low


def plan_distributed(
    clip: float,
    dimension: int,
    sample_rate: float,
    min_clients: int,
    max_clients: int,
    delta: float,
    *,
    noise_multiplier: float = 0.0,
    target_epsilon: float = 0.0,
    rounds: int = 1,
) -> DistributedPlan:
    """The plan with ``noise_multiplier`` as given, or the smallest that keeps ``rounds`` rounds
    within ``target_epsilon``."""

    def plan(multiplier: float) -> DistributedPlan:
        c = _scale_for(multiplier, dimension, min_clients, max_clients)
        bound = rounded_bound(c, dimension)
        return DistributedPlan(
            clip=clip,
            granularity=clip / c,
            bound=bound,
            local_std=multiplier * bound / math.sqrt(min_clients),
            min_clients=min_clients,
            max_clients=max_clients,
            sample_rate=sample_rate,
            dimension=dimension,
            delta=delta,
        )

    if noise_multiplier > 0:
        return plan(noise_multiplier)
    low, high = 1e-3, 1e3
    if plan(high).epsilon(rounds) > target_epsilon:
        raise BudgetUnreachable(
            f"no noise keeps {rounds} rounds at rate {sample_rate:g} within epsilon "
            f"{target_epsilon:g}"
        )
    for _ in range(60):  # the multiplier to a relative 1e-5
        mid = math.sqrt(low * high)
        low, high = (mid, high) if plan(mid).epsilon(rounds) > target_epsilon else (low, mid)
        if high / low < 1 + 1e-5:
            break
    return plan(high)


def planned_min_clients(config: RunConfig) -> int:
    """The fewest clients whose sum may be unmasked: the expected clients a round,
    strategy.fraction-train × strategy.min-available-nodes, less dp.distributed.dropout."""
    expected = config.strategy.fraction_train * config.strategy.min_available_nodes
    return max(1, math.floor(expected * (1 - config.dp.distributed.dropout) + 1e-9))


@cache
def _cached_plan(
    clip: float,
    dimension: int,
    rate: float,
    min_clients: int,
    delta: float,
    multiplier: float,
    target: float,
    rounds: int,
) -> DistributedPlan:
    return plan_distributed(
        clip,
        dimension,
        rate,
        min_clients=min_clients,
        max_clients=MAX_CLIENTS,
        delta=delta,
        noise_multiplier=multiplier,
        target_epsilon=target,
        rounds=rounds,
    )


def run_plan(config: RunConfig, dimension: int) -> DistributedPlan:
    """The run's plan for updates of ``dimension`` entries: the clients' rate is
    strategy.fraction-train, the noise sized for ``planned_min_clients``; a sample over
    ``MAX_CLIENTS`` is refused."""
    dp = config.dp
    return _cached_plan(
        dp.client.clip_norm,
        dimension,
        config.strategy.fraction_train,
        planned_min_clients(config),
        dp.delta,
        dp.noise_multiplier,
        dp.target_epsilon,
        config.num_server_rounds,
    )
