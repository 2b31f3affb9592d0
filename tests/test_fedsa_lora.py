"""FedSA-LoRA against its definition: only A is averaged; every B stays with its client."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.fedsa_lora import aggregate_fedsa_lora
from tests.lora_factor_cases import make_clients, make_weights


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 6),
    rank=st.integers(1, 8),
    d_in=st.integers(1, 16),
    seed=st.integers(0, 10_000),
)
def test_a_is_the_weighted_mean(n: int, rank: int, d_in: int, seed: int) -> None:
    # Prepare
    clients = make_clients([rank] * n, 10, d_in, seed=seed)
    a_matrices = [{name: a for name, (a, _) in c.items()} for c in clients]
    weights = make_weights(n, seed=seed)
    total = sum(weights)
    # Execute
    out = aggregate_fedsa_lora(a_matrices, weights)
    # Assert
    assert sorted(out) == sorted(a_matrices[0])
    for name in out:
        expected = sum(
            w / total * a[name].double() for w, a in zip(weights, a_matrices, strict=True)
        )
        assert out[name].dtype == torch.float32
        torch.testing.assert_close(out[name].double(), expected, rtol=1e-6, atol=1e-7)


def test_each_client_keeps_its_own_b_so_models_stay_personal() -> None:
    # Prepare
    clients = make_clients([4] * 3, 8, 6, seed=5)
    a_matrices = [{name: a for name, (a, _) in c.items()} for c in clients]
    before = [{name: a.clone() for name, a in c.items()} for c in a_matrices]
    # Execute
    shared = aggregate_fedsa_lora(a_matrices, [1, 1, 1])
    # Assert: inputs untouched; client k's model is B_k·Ā, different per client
    for c, old in zip(a_matrices, before, strict=True):
        for name in c:
            torch.testing.assert_close(c[name], old[name])
    name = "layers.0.q_proj"
    personal = [c[name][1] @ shared[name] for c in clients]
    assert (personal[0] - personal[1]).norm() > 1e-3 * personal[0].norm()


def test_negative_weights_are_refused() -> None:
    clients = make_clients([2, 2], 4, 4, seed=0)
    a_matrices = [{name: a for name, (a, _) in c.items()} for c in clients]
    with pytest.raises(ValueError, match="non-negative"):
        aggregate_fedsa_lora(a_matrices, [1.0, -1.0])
