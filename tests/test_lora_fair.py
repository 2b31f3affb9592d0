"""LoRA-FAIR against its definitions: both solvers improve on FedAvg and find their optimum.

The iterative solver minimises f(dB) = ||dB·Ā − R||_F + lam·||dB||_F with R = M − B̄Ā. Its
reference optimum here is found independently of the solver: zeroing the gradient gives
dB(ĀĀᵀ + μI) = RĀᵀ with μ = lam·||E||/||dB||, so the minimiser lies on the ridge path
dB(μ) = RĀᵀ(ĀĀᵀ + μI)⁻¹ (or is 0), and a one-dimensional search over μ finds it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.lora_factors import check_same_modules, weighted_mean
from strategies.lora_fair import aggregate_lora_fair, lora_fair_closed_form, lora_fair_correction
from tests.lora_factor_cases import make_clients, make_weights, reference_mean_of_products

NAME = "layers.0.q_proj"


def _problem(n: int, rank: int, d_out: int, d_in: int, seed: int):
    """(Ā, B̄, M) in float64 for one module of a drifting round."""
    clients = make_clients([rank] * n, d_out, d_in, seed=seed, dtype=torch.float64)
    weights = make_weights(n, seed=seed)
    a_bar = weighted_mean([c[NAME][0] for c in clients], weights)
    b_bar = weighted_mean([c[NAME][1] for c in clients], weights)
    return a_bar, b_bar, reference_mean_of_products(clients, weights)[NAME]


def _norm(x: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(x))


def _objective(delta, a_bar, b_bar, target, lam) -> float:
    return _norm((b_bar + delta) @ a_bar - target) + lam * _norm(delta)


def _reference_optimum(a_bar, b_bar, target, lam) -> float:
    """min f over the ridge path and dB = 0 (see the module docstring), by grid + golden section."""
    r = target - b_bar @ a_bar
    s, q = torch.linalg.eigh(a_bar @ a_bar.T)
    c = r @ a_bar.T @ q

    def f(log_mu: float) -> float:
        return _objective((c / (s + math.exp(log_mu))) @ q.T, a_bar, b_bar, target, lam)

    grid = [math.log(10.0) * e for e in torch.linspace(-12, 6, 361).tolist()]
    i = min(range(len(grid)), key=lambda j: f(grid[j]))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    for _ in range(80):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        lo, hi = (lo, m2) if f(m1) < f(m2) else (m1, hi)
    return min(f(lo), _objective(torch.zeros_like(b_bar), a_bar, b_bar, target, lam))


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 6),
    rank=st.integers(1, 6),
    d_out=st.integers(1, 16),
    d_in=st.integers(1, 16),
    lam=st.sampled_from([0.0, 1e-3, 1e-2, 1.0, 10.0]),
    seed=st.integers(0, 10_000),
)
def test_never_further_from_the_mean_of_products_than_fedavg(
    n: int, rank: int, d_out: int, d_in: int, lam: float, seed: int
) -> None:
    # Prepare
    a_bar, b_bar, target = _problem(n, rank, d_out, d_in, seed)
    fedavg = _norm(b_bar @ a_bar - target)
    # Execute
    iterative = lora_fair_correction(a_bar, b_bar, target, lam=lam)
    closed = lora_fair_closed_form(a_bar, b_bar, target, lam=lam)
    # Assert: the best iterate includes dB = 0, and the ridge minimiser cannot raise the residual
    start = _objective(torch.zeros_like(b_bar), a_bar, b_bar, target, lam)
    assert _objective(iterative, a_bar, b_bar, target, lam) <= start
    assert _norm((b_bar + iterative) @ a_bar - target) <= fedavg * (1 + 1e-12) + 1e-15
    assert _norm((b_bar + closed) @ a_bar - target) <= fedavg * (1 + 1e-12) + 1e-15


@settings(max_examples=20, deadline=None)
@given(
    rank=st.integers(1, 6),
    d_out=st.integers(1, 16),
    d_in=st.integers(1, 16),
    lam=st.sampled_from([1e-3, 1e-2, 1.0, 10.0]),
    seed=st.integers(0, 10_000),
)
def test_closed_form_zeroes_the_gradient_of_the_ridge_objective(
    rank: int, d_out: int, d_in: int, lam: float, seed: int
) -> None:
    # Prepare
    a_bar, b_bar, target = _problem(4, rank, d_out, d_in, seed)
    # Execute
    delta = lora_fair_closed_form(a_bar, b_bar, target, lam=lam)
    # Assert: ∇ (||E||² + lam||dB||²) / 2 = EĀᵀ + lam·dB = 0, with E = (B̄ + dB)Ā − M
    gradient = ((b_bar + delta) @ a_bar - target) @ a_bar.T + lam * delta
    scale = _norm((b_bar @ a_bar - target) @ a_bar.T) + 1e-300
    assert _norm(gradient) <= 1e-10 * scale


@pytest.mark.parametrize(("d", "rank", "lam"), [(384, 8, 0.01), (576, 16, 0.01), (384, 4, 0.1)])
def test_iterative_reaches_the_optimum_on_realistic_sizes(d: int, rank: int, lam: float) -> None:
    # Prepare
    a_bar, b_bar, target = _problem(10, rank, d, d, seed=d + rank)
    optimum = _reference_optimum(a_bar, b_bar, target, lam)
    # Execute
    delta = lora_fair_correction(a_bar, b_bar, target, lam=lam, steps=200)
    # Assert
    value = _objective(delta, a_bar, b_bar, target, lam)
    assert value <= optimum * (1 + 1e-9)
    assert _norm(delta) > 0


def test_as_lam_vanishes_both_solvers_reach_the_least_squares_correction() -> None:
    # Prepare: the best any correction of B can do, dB* = R·pinv(Ā)
    a_bar, b_bar, target = _problem(8, 8, 96, 80, seed=3)
    r = target - b_bar @ a_bar
    least_squares = r @ torch.linalg.pinv(a_bar)
    best = _norm(least_squares @ a_bar - r)
    # Execute
    exact = lora_fair_closed_form(a_bar, b_bar, target, lam=0.0)
    closed = lora_fair_closed_form(a_bar, b_bar, target, lam=1e-10)
    iterative = lora_fair_correction(a_bar, b_bar, target, lam=1e-10, steps=200)
    # Assert
    torch.testing.assert_close(exact, least_squares, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(closed, least_squares, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(
        iterative, least_squares, rtol=1e-4, atol=1e-6 * _norm(least_squares)
    )
    for delta in (exact, closed, iterative):
        assert _norm(delta @ a_bar - r) == pytest.approx(best, rel=1e-9)


def test_correction_shrinks_as_lam_grows() -> None:
    # Prepare
    a_bar, b_bar, target = _problem(10, 8, 384, 384, seed=5)
    lams = [1e-4, 1e-2, 1.0, 100.0]
    # Execute
    closed = [_norm(lora_fair_closed_form(a_bar, b_bar, target, lam=lam)) for lam in lams]
    iterative = [_norm(lora_fair_correction(a_bar, b_bar, target, lam=lam)) for lam in lams]
    # Assert: strictly for the ridge; for the norm penalty down to exactly 0 once lam is large
    assert all(x > y for x, y in zip(closed, closed[1:], strict=False))
    assert all(x >= y for x, y in zip(iterative, iterative[1:], strict=False))
    assert iterative[0] > iterative[1] > 0 and iterative[-1] == 0


def test_solvers_agree_within_one_percent_on_a_realistic_problem() -> None:
    # Prepare
    a_bar, b_bar, target = _problem(10, 8, 384, 384, seed=7)
    r = target - b_bar @ a_bar
    floor = _norm(r @ torch.linalg.pinv(a_bar) @ a_bar - r)
    # Execute
    iterative = _norm((b_bar + lora_fair_correction(a_bar, b_bar, target)) @ a_bar - target)
    closed = _norm((b_bar + lora_fair_closed_form(a_bar, b_bar, target)) @ a_bar - target)
    # Assert: both between the least-squares floor and FedAvg, and within 1% of each other
    for value in (iterative, closed):
        assert floor * (1 - 1e-9) <= value <= _norm(r)
    assert iterative == pytest.approx(closed, rel=1e-2)


@pytest.mark.parametrize("solver", ["iterative", "closed-form"])
def test_aggregate_keeps_fedavg_a_and_corrects_b(solver: str) -> None:
    # Prepare
    clients = make_clients([4] * 5, 40, 30, seed=9)
    weights = make_weights(5, seed=9)
    target = reference_mean_of_products(clients, weights)
    # Execute
    out = aggregate_lora_fair(clients, weights, solver=solver)
    # Assert
    for name in check_same_modules(clients):
        a, b = out[name]
        a_bar = sum(
            w / sum(weights) * c[name][0].double() for w, c in zip(weights, clients, strict=True)
        )
        b_bar = sum(
            w / sum(weights) * c[name][1].double() for w, c in zip(weights, clients, strict=True)
        )
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a.double(), a_bar, rtol=1e-6, atol=1e-7)
        assert _norm(b.double() @ a.double() - target[name]) < _norm(b_bar @ a_bar - target[name])


def test_identical_clients_need_no_correction() -> None:
    clients = make_clients([4], 12, 10, seed=1) * 3
    out = aggregate_lora_fair(clients, [1, 2, 3])
    for name, (a, b) in clients[0].items():
        torch.testing.assert_close(out[name][0], a)
        torch.testing.assert_close(out[name][1], b)


def test_bad_arguments_are_refused() -> None:
    clients = make_clients([4, 4], 6, 6, seed=0)
    with pytest.raises(ValueError, match="solver"):
        aggregate_lora_fair(clients, [1, 1], solver="svd")
    with pytest.raises(ValueError, match="equal ranks"):
        aggregate_lora_fair(make_clients([2, 4], 6, 6, seed=0), [1, 1])
    a, b = clients[0][NAME]
    with pytest.raises(ValueError, match="lr"):
        lora_fair_correction(a, b, b @ a, lr=2.5)
    with pytest.raises(ValueError, match="lam"):
        lora_fair_closed_form(a, b, b @ a, lam=-1.0)
