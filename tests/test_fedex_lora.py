"""FedEx-LoRA against its definition: B̄Ā plus the residual is exactly Σ p_k B_k A_k."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.fedex_lora import aggregate_fedex_lora
from tests.lora_factor_cases import make_clients, make_weights, reference_mean_of_products


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    rank=st.integers(1, 8),
    d_out=st.integers(1, 16),
    d_in=st.integers(1, 16),
    seed=st.integers(0, 10_000),
)
def test_factors_are_fedavg_and_residual_makes_it_exact(
    n: int, rank: int, d_out: int, d_in: int, seed: int
) -> None:
    # Prepare
    clients = make_clients([rank] * n, d_out, d_in, seed=seed)
    weights = make_weights(n, seed=seed)
    total = sum(weights)
    expected = reference_mean_of_products(clients, weights)
    # Execute
    factors, residuals = aggregate_fedex_lora(clients, weights)
    # Assert
    for name, (a, b) in factors.items():
        a_bar = sum(w / total * c[name][0].double() for w, c in zip(weights, clients, strict=True))
        b_bar = sum(w / total * c[name][1].double() for w, c in zip(weights, clients, strict=True))
        torch.testing.assert_close(a.double(), a_bar, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(b.double(), b_bar, rtol=1e-6, atol=1e-7)
        assert residuals[name].dtype == torch.float32
        exact = b.double() @ a.double() + residuals[name].double()
        torch.testing.assert_close(exact, expected[name], rtol=1e-5, atol=1e-7)


def test_residual_is_zero_for_identical_clients_and_full_rank_otherwise() -> None:
    # Prepare
    same = make_clients([4], 32, 24, seed=2) * 3
    drifting = make_clients([4] * 6, 32, 24, seed=2)
    # Execute
    _, zero = aggregate_fedex_lora(same, [1, 2, 3])
    _, residual = aggregate_fedex_lora(drifting, [1] * 6)
    # Assert: the residual is what a rank-4 adapter cannot carry
    assert zero["layers.0.q_proj"].abs().max() < 1e-7
    assert torch.linalg.matrix_rank(residual["layers.0.q_proj"].double()) > 4


def test_mixed_ranks_are_refused() -> None:
    with pytest.raises(ValueError, match="equal ranks"):
        aggregate_fedex_lora(make_clients([2, 4], 6, 6, seed=0), [1, 1])
