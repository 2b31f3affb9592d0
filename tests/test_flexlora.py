"""FlexLoRA against its definition: the SVD truncation of the mean of the clients' products."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.flexlora import aggregate_flexlora
from strategies.lora_factors import discrepancy, product, truncate_rank
from tests.lora_factor_cases import make_clients, make_weights, reference_mean_of_products


@settings(max_examples=25, deadline=None)
@given(
    ranks=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    d_out=st.integers(2, 16),
    d_in=st.integers(2, 16),
    seed=st.integers(0, 10_000),
)
def test_global_pair_is_the_best_rank_r_approximation_and_so_is_each_prefix(
    ranks: list[int], d_out: int, d_in: int, seed: int
) -> None:
    # Prepare
    clients = make_clients(ranks, d_out, d_in, seed=seed)
    weights = make_weights(len(ranks), seed=seed)
    rank = max(ranks)
    expected = reference_mean_of_products(clients, weights)
    # Execute
    means, factors = aggregate_flexlora(clients, weights, rank)
    # Assert
    for name, (a, b) in factors.items():
        target = expected[name]
        torch.testing.assert_close(means[name].double(), target, rtol=1e-5, atol=1e-7)
        assert a.shape == (rank, d_in) and b.shape == (d_out, rank)
        # Independent reference: Σ_{i<=r} σ_i u_i v_iᵀ from numpy's SVD of the defined mean
        u, s, vt = np.linalg.svd(target.numpy())
        q = min(rank, len(s))
        top = (u[:, :q] * s[:q]) @ vt[:q]
        scale = max(float(s[0]), 1e-12)
        np.testing.assert_allclose(product((a, b)).double().numpy(), top, atol=1e-5 * scale)
        # Eckart–Young: each prefix's error is sqrt(Σ_{i>q} σ_i²), the least any rank-q pair has
        for prefix in range(1, rank + 1):
            err = discrepancy(truncate_rank((a, b), prefix), target)
            floor = float(np.sqrt((s[prefix:] ** 2).sum()))
            assert err == pytest.approx(floor, rel=1e-4, abs=1e-5 * scale)


def test_a_client_of_smaller_rank_takes_a_prefix_of_its_own_rank() -> None:
    # Prepare
    clients = make_clients([2, 4, 8], 24, 20, seed=4)
    # Execute
    _, factors = aggregate_flexlora(clients, [5, 1, 1], 8)
    small = truncate_rank(factors["layers.0.q_proj"], 2)
    # Assert
    assert small[0].shape == (2, 20) and small[1].shape == (24, 2)


def test_rank_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="rank"):
        aggregate_flexlora(make_clients([2], 4, 4, seed=0), [1], 0)
