"""FLoRA against its definition: the stacked pair's product is exactly Σ p_k B_k A_k."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.flora import aggregate_flora
from strategies.lora_factors import product
from tests.lora_factor_cases import make_clients, make_weights, reference_mean_of_products


@settings(max_examples=25, deadline=None)
@given(
    ranks=st.lists(st.integers(1, 8), min_size=1, max_size=6),
    d_out=st.integers(1, 16),
    d_in=st.integers(1, 16),
    seed=st.integers(0, 10_000),
)
def test_stack_reproduces_the_mean_of_products_for_any_ranks(
    ranks: list[int], d_out: int, d_in: int, seed: int
) -> None:
    # Prepare
    clients = make_clients(ranks, d_out, d_in, seed=seed)
    weights = make_weights(len(ranks), seed=seed)
    expected = reference_mean_of_products(clients, weights)
    # Execute
    out = aggregate_flora(clients, weights)
    # Assert
    for name, (a, b) in out.items():
        assert a.shape == (sum(ranks), d_in) and b.shape == (d_out, sum(ranks))
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(product((a, b)).double(), expected[name], rtol=1e-5, atol=1e-7)


def test_blocks_are_a_k_and_p_k_b_k_in_client_order() -> None:
    # Prepare
    clients = make_clients([2, 3], 5, 4, seed=1)
    # Execute
    a, b = aggregate_flora(clients, [1.0, 3.0])["layers.0.v_proj"]
    # Assert: A blocks unscaled; B blocks scaled by p = (1/4, 3/4)
    a0, b0 = clients[0]["layers.0.v_proj"]
    a1, b1 = clients[1]["layers.0.v_proj"]
    torch.testing.assert_close(a, torch.cat([a0, a1]))
    torch.testing.assert_close(b, torch.cat([0.25 * b0, 0.75 * b1], dim=1))


def test_mismatched_shapes_are_refused() -> None:
    small = make_clients([2], 5, 4, seed=0)[0]
    big = make_clients([2], 5, 6, seed=0)[0]
    with pytest.raises(ValueError, match="d_out x d_in"):
        aggregate_flora([small, big], [1, 1])
