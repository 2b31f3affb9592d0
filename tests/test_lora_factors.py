"""Shared factor-pair math against its definitions, and the Eckart–Young floor for strategies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.fedex_lora import aggregate_fedex_lora
from strategies.flexlora import aggregate_flexlora
from strategies.flora import aggregate_flora
from strategies.hetlora import aggregate_hetlora
from strategies.lora_factors import (
    best_rank_approximation,
    check_same_modules,
    discrepancy,
    mean_of_products,
    normalised_weights,
    pad_rank,
    product,
    truncate_rank,
    weighted_mean,
)
from strategies.lora_fair import aggregate_lora_fair
from tests.lora_factor_cases import (
    make_clients,
    make_weights,
    reference_mean_of_products,
    tail_bound,
)

SETTINGS = settings(max_examples=25, deadline=None)


def _matrix(d_out: int, d_in: int, seed: int) -> torch.Tensor:
    return torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(seed))


def test_product_is_b_times_a_and_mismatched_ranks_are_refused() -> None:
    # Prepare
    a, b = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[3.0], [-1.0]])
    # Execute
    out = product((a, b))
    # Assert: the outer product worked out by hand
    torch.testing.assert_close(out, torch.tensor([[3.0, 6.0, 0.0], [-1.0, -2.0, 0.0]]))
    with pytest.raises(ValueError, match="rank"):
        product((torch.zeros(2, 3), torch.zeros(4, 3)))


@SETTINGS
@given(
    ranks=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    d_out=st.integers(1, 12),
    d_in=st.integers(1, 12),
    seed=st.integers(0, 10_000),
)
def test_mean_of_products_is_the_weighted_sum(
    ranks: list[int], d_out: int, d_in: int, seed: int
) -> None:
    # Prepare
    clients = make_clients(ranks, d_out, d_in, seed=seed)
    weights = make_weights(len(ranks), seed=seed)
    # Execute
    out = mean_of_products(clients, weights)
    # Assert
    expected = reference_mean_of_products(clients, weights)
    for name, m in out.items():
        assert m.dtype == torch.float32
        torch.testing.assert_close(m.double(), expected[name], rtol=1e-5, atol=1e-7)


def test_discrepancy_is_the_frobenius_distance() -> None:
    # Prepare: B@A = [[1, 0], [0, 0]]; target differs by 3 and 4 in two entries
    pair = (torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0], [0.0]]))
    target = torch.tensor([[1.0, 3.0], [4.0, 0.0]])
    # Execute / Assert
    assert discrepancy(pair, target) == pytest.approx(5.0)


@SETTINGS
@given(
    d_out=st.integers(2, 16),
    d_in=st.integers(2, 16),
    rank=st.integers(1, 18),
    seed=st.integers(0, 10_000),
)
def test_best_rank_approximation_is_eckart_young(
    d_out: int, d_in: int, rank: int, seed: int
) -> None:
    # Prepare
    matrix = _matrix(d_out, d_in, seed)
    u, s, vt = np.linalg.svd(matrix.double().numpy())
    # Execute
    a, b = best_rank_approximation(matrix, rank)
    # Assert: shapes padded to the rank asked for, product = Σ_{i<=r} σ_i u_i v_iᵀ (numpy's SVD)
    assert a.shape == (rank, d_in) and b.shape == (d_out, rank)
    q = min(rank, len(s))
    expected = (u[:, :q] * s[:q]) @ vt[:q]
    np.testing.assert_allclose((b @ a).double().numpy(), expected, rtol=1e-4, atol=1e-5)
    if rank > len(s):
        assert not a[len(s) :].any() and not b[:, len(s) :].any()
    # Every prefix is the best approximation of its own rank: error = sqrt(Σ_{i>q} σ_i²)
    for prefix in range(1, rank + 1):
        err = discrepancy(truncate_rank((a, b), prefix), matrix)
        assert err == pytest.approx(float(np.sqrt((s[prefix:] ** 2).sum())), rel=1e-4, abs=1e-5)


def test_best_rank_approximation_splits_each_singular_value_evenly() -> None:
    # Prepare
    matrix = _matrix(20, 30, 3).double()
    s = torch.linalg.svdvals(matrix)
    # Execute
    a, b = best_rank_approximation(matrix, 5)
    # Assert: ||A_i|| = ||B_:,i|| = sqrt(σ_i), so components come in decreasing order
    torch.testing.assert_close(a.norm(dim=1), s[:5].sqrt())
    torch.testing.assert_close(b.norm(dim=0), s[:5].sqrt())
    with pytest.raises(ValueError, match="rank"):
        best_rank_approximation(matrix, 0)


@SETTINGS
@given(rank=st.integers(1, 6), extra=st.integers(0, 5), seed=st.integers(0, 10_000))
def test_pad_then_truncate_round_trips_and_keeps_the_product(
    rank: int, extra: int, seed: int
) -> None:
    # Prepare
    pair = make_clients([rank], 7, 5, seed=seed)[0]["layers.0.q_proj"]
    # Execute
    padded = pad_rank(pair, rank + extra)
    back = truncate_rank(padded, rank)
    # Assert
    assert padded[0].shape == (rank + extra, 5) and padded[1].shape == (7, rank + extra)
    assert not padded[0][rank:].any() and not padded[1][:, rank:].any()
    torch.testing.assert_close(product(padded), product(pair))
    torch.testing.assert_close(back, pair)


def test_pad_and_truncate_refuse_the_wrong_direction() -> None:
    pair = make_clients([4], 6, 6, seed=0)[0]["layers.0.q_proj"]
    with pytest.raises(ValueError, match="pad"):
        pad_rank(pair, 3)
    with pytest.raises(ValueError, match="truncate"):
        truncate_rank(pair, 5)


def test_check_same_modules_names_each_disagreement() -> None:
    # Prepare
    good = make_clients([2, 3], 6, 5, seed=0)
    renamed = {"other": good[1]["layers.0.q_proj"], "layers.0.v_proj": good[1]["layers.0.v_proj"]}
    wide = {name: (a, torch.zeros(9, a.shape[0])) for name, (a, _) in good[1].items()}
    broken = dict(good[1], **{"layers.0.v_proj": (torch.zeros(2, 5), torch.zeros(6, 3))})
    # Execute / Assert
    assert check_same_modules(good) == ["layers.0.q_proj", "layers.0.v_proj"]
    with pytest.raises(ValueError, match="other"):
        check_same_modules([good[0], renamed])
    with pytest.raises(ValueError, match="d_out x d_in"):
        check_same_modules([good[0], wide])
    with pytest.raises(ValueError, match="A has rank 2 but B has rank 3"):
        check_same_modules([good[0], broken])
    with pytest.raises(ValueError, match="equal ranks"):
        check_same_modules(good, same_rank=True)


def test_normalised_weights_refuse_bad_input() -> None:
    assert normalised_weights([1, 3], 2) == [0.25, 0.75]
    for weights, n in (([1.0], 2), ([1.0, -0.5], 2), ([0.0, 0.0], 2)):
        with pytest.raises(ValueError):
            normalised_weights(weights, n)


# The floor: no rank-r pair is closer to M = Σ p_k B_k A_k than sqrt(Σ_{i>r} σ_i(M)²).


def _rank_r_discrepancies(clients, weights, rank) -> dict[str, float]:
    """||B A − M||_F of each strategy's rank-r global pair, for the first module."""
    name = "layers.0.q_proj"
    target = reference_mean_of_products(clients, weights)[name]
    a_bar = weighted_mean([c[name][0] for c in clients], weights)
    b_bar = weighted_mean([c[name][1] for c in clients], weights)
    _, flex = aggregate_flexlora(clients, weights, rank)
    fair_iter = aggregate_lora_fair(clients, weights, solver="iterative")
    fair_closed = aggregate_lora_fair(clients, weights, solver="closed-form")
    het = aggregate_hetlora(clients, weights, rank)
    return {
        "fedavg": discrepancy((a_bar, b_bar), target),
        "lora-fair (iterative)": discrepancy(fair_iter[name], target),
        "lora-fair (closed-form)": discrepancy(fair_closed[name], target),
        "flexlora": discrepancy(flex[name], target),
        "hetlora": discrepancy(het[name], target),
    }


def test_no_rank_r_strategy_beats_eckart_young_and_flexlora_reaches_it() -> None:
    # Prepare: a realistic round, 10 clients on a 384 x 384 projection at rank 8
    clients = make_clients([8] * 10, 384, 384, seed=11)
    weights = make_weights(10, seed=11)
    name = "layers.0.q_proj"
    target = reference_mean_of_products(clients, weights)[name]
    bound = tail_bound(target, 8)
    # Execute
    rank_r = _rank_r_discrepancies(clients, weights, 8)
    stack = aggregate_flora(clients, weights)[name]
    fedex_factors, fedex_residuals = aggregate_fedex_lora(clients, weights)
    residual = fedex_residuals[name]
    # FedEx's global update is B̄Ā + residual, so compare B̄Ā with M − residual
    fedex = discrepancy(fedex_factors[name], target - residual.double())
    # Assert: every rank-r pair sits on or above the floor; FlexLoRA is on it
    for strategy, value in rank_r.items():
        assert value >= bound * (1 - 1e-5), strategy
    assert rank_r["flexlora"] == pytest.approx(bound, rel=1e-4)
    assert rank_r["lora-fair (iterative)"] <= rank_r["fedavg"]
    # Going below the floor takes more than rank r: FLoRA's Σ r_k stack, FedEx's dense residual
    assert stack[0].shape[0] == 80 and discrepancy(stack, target) < 1e-3 * bound
    assert fedex < 1e-3 * bound
    assert torch.linalg.matrix_rank(residual.double()) > 8
    print(f"\nrank-8 floor sqrt(sum_{{i>8}} s_i^2) = {bound:.6f}, ||M|| = {target.norm():.6f}")
    for strategy, value in {**rank_r, "flora (rank 80)": discrepancy(stack, target)}.items():
        print(f"{strategy:26s} {value:.6f}  ({value / bound:.4f} x floor)")
    print(f"{'fedex-lora (+ residual)':26s} {fedex:.2e}")
