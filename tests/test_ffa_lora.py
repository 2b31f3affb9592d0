"""FFA-LoRA against its definition: with A frozen and shared, averaging B is exact."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.ffa_lora import aggregate_ffa_lora
from tests.lora_factor_cases import make_clients, make_weights


def _b_only(n: int, rank: int, d_out: int, d_in: int, seed: int):
    """Clients of one FFA-LoRA round: A is client 0's init for everyone, B drifts per client."""
    clients = make_clients([rank] * n, d_out, d_in, seed=seed)
    shared_a = {name: a for name, (a, _) in clients[0].items()}
    return shared_a, [{name: b for name, (_, b) in c.items()} for c in clients]


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    rank=st.integers(1, 8),
    d_out=st.integers(1, 16),
    d_in=st.integers(1, 16),
    seed=st.integers(0, 10_000),
)
def test_mean_of_b_times_shared_a_is_the_mean_of_products(
    n: int, rank: int, d_out: int, d_in: int, seed: int
) -> None:
    # Prepare
    shared_a, b_matrices = _b_only(n, rank, d_out, d_in, seed)
    weights = make_weights(n, seed=seed)
    total = sum(weights)
    # Execute
    out = aggregate_ffa_lora(b_matrices, weights)
    # Assert: B̄ = Σ p_k B_k, and B̄·A = Σ p_k (B_k·A) since A is shared
    for name, a in shared_a.items():
        expected_b = sum(
            w / total * b[name].double() for w, b in zip(weights, b_matrices, strict=True)
        )
        mean_product = sum(
            w / total * (b[name].double() @ a.double())
            for w, b in zip(weights, b_matrices, strict=True)
        )
        assert out[name].dtype == torch.float32
        torch.testing.assert_close(out[name].double(), expected_b, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(
            (out[name].double() @ a.double()), mean_product, rtol=1e-5, atol=1e-7
        )


def test_only_the_b_names_it_is_given_come_back() -> None:
    # Prepare
    _, b_matrices = _b_only(3, 4, 8, 6, 0)
    # Execute
    out = aggregate_ffa_lora(b_matrices, [1, 2, 3])
    # Assert
    assert sorted(out) == sorted(b_matrices[0])


def test_bad_weights_and_names_are_refused() -> None:
    _, b_matrices = _b_only(2, 2, 4, 4, 0)
    with pytest.raises(ValueError, match="non-negative"):
        aggregate_ffa_lora(b_matrices, [2.0, -1.0])
    with pytest.raises(ValueError, match="disagree"):
        aggregate_ffa_lora([b_matrices[0], {"other": b_matrices[1]["layers.0.q_proj"]}], [1, 1])
