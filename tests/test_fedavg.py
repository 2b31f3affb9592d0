"""FedAvg against its definition, and the bias it leaves in LoRA products."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.fedavg import aggregate_fedavg


def _clients(n: int, rank: int, d_out: int, d_in: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    a0, b0 = torch.randn(rank, d_in, generator=g), torch.randn(d_out, rank, generator=g) * 0.1
    # Clients start from the same factors and drift apart, as after local training.
    return [
        {
            "m.lora_A.weight": a0 + 0.3 * torch.randn(rank, d_in, generator=g),
            "m.lora_B.weight": b0 + 0.3 * torch.randn(d_out, rank, generator=g),
        }
        for _ in range(n)
    ]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), rank=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_weighted_mean_of_each_tensor(n: int, rank: int, seed: int) -> None:
    updates = _clients(n, rank, 12, 10, seed)
    weights = torch.rand(n, generator=torch.Generator().manual_seed(seed)).add(0.1).tolist()
    out = aggregate_fedavg(updates, weights)
    for key in updates[0]:
        expected = sum(w * u[key].double() for w, u in zip(weights, updates, strict=True)) / sum(
            weights
        )
        torch.testing.assert_close(out[key].double(), expected, rtol=1e-6, atol=1e-6)
        assert out[key].dtype == updates[0][key].dtype


def test_equal_clients_give_that_client() -> None:
    update = _clients(1, 4, 6, 5, 0)[0]
    out = aggregate_fedavg([update, update, update], [1, 5, 2])
    for key in update:
        torch.testing.assert_close(out[key], update[key])


def test_product_of_means_is_not_mean_of_products() -> None:
    updates = _clients(4, 4, 16, 12, 1)
    out = aggregate_fedavg(updates, [1.0] * 4)
    mean_of_products = sum(u["m.lora_B.weight"] @ u["m.lora_A.weight"] for u in updates) / 4
    product_of_means = out["m.lora_B.weight"] @ out["m.lora_A.weight"]
    assert (mean_of_products - product_of_means).norm() > 1e-2 * mean_of_products.norm()


def test_mismatched_names_and_bad_weights_are_refused() -> None:
    a, b = _clients(2, 2, 4, 4, 0)
    b = {"other": b["m.lora_A.weight"], "m.lora_B.weight": b["m.lora_B.weight"]}
    with pytest.raises(ValueError, match="disagree on tensor names"):
        aggregate_fedavg([a, b], [1, 1])
    with pytest.raises(ValueError, match="positive"):
        aggregate_fedavg([a, a], [0, 0])
