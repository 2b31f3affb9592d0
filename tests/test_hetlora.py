"""HetLoRA against its definition: zero-pad to the global rank, weight by w_k·||B_k A_k||_F."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.fedavg import aggregate_fedavg
from strategies.hetlora import aggregate_hetlora
from strategies.lora_factors import truncate_rank
from tests.lora_factor_cases import make_clients, make_weights


@settings(max_examples=25, deadline=None)
@given(
    ranks=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    extra=st.integers(0, 2),
    d_out=st.integers(1, 12),
    d_in=st.integers(1, 12),
    seed=st.integers(0, 10_000),
)
def test_mixed_ranks_are_padded_and_weighted_by_update_size(
    ranks: list[int], extra: int, d_out: int, d_in: int, seed: int
) -> None:
    # Prepare
    clients = make_clients(ranks, d_out, d_in, seed=seed)
    weights = make_weights(len(ranks), seed=seed)
    rank = max(ranks) + extra
    # Execute
    out = aggregate_hetlora(clients, weights, rank)
    # Assert: component i of the global pair sums only the clients that have a component i
    for name, (a, b) in out.items():
        scores = [
            w * float((c[name][1].double() @ c[name][0].double()).norm())
            for w, c in zip(weights, clients, strict=True)
        ]
        q = [s / sum(scores) for s in scores]
        expected_a = torch.zeros(rank, d_in, dtype=torch.float64)
        expected_b = torch.zeros(d_out, rank, dtype=torch.float64)
        for q_k, c, r_k in zip(q, clients, ranks, strict=True):
            expected_a[:r_k] += q_k * c[name][0].double()
            expected_b[:, :r_k] += q_k * c[name][1].double()
        assert a.shape == (rank, d_in) and b.shape == (d_out, rank)
        torch.testing.assert_close(a.double(), expected_a, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(b.double(), expected_b, rtol=1e-5, atol=1e-7)
        assert not a[max(ranks) :].any() and not b[:, max(ranks) :].any()


def test_equal_ranks_and_equal_norms_give_the_plain_mean() -> None:
    # Prepare: rescale each B so every client's ||B_k A_k||_F is 1
    clients = make_clients([4] * 4, 16, 12, seed=2)
    for c in clients:
        for name, (a, b) in c.items():
            c[name] = (a, b / (b @ a).norm())
    weights = [10.0, 20.0, 30.0, 40.0]
    flat = [
        {f"{n}.A": a for n, (a, _) in c.items()} | {f"{n}.B": b for n, (_, b) in c.items()}
        for c in clients
    ]
    # Execute
    out = aggregate_hetlora(clients, weights, 4)
    plain = aggregate_fedavg(flat, weights)
    # Assert
    for name, (a, b) in out.items():
        torch.testing.assert_close(a, plain[f"{name}.A"])
        torch.testing.assert_close(b, plain[f"{name}.B"])


def test_each_client_truncates_to_its_own_rank() -> None:
    # Prepare
    clients = make_clients([2, 4, 8], 20, 16, seed=3)
    # Execute
    out = aggregate_hetlora(clients, [1, 1, 1], 8)
    # Assert
    for r_k in (2, 4, 8):
        a, b = truncate_rank(out["layers.0.q_proj"], r_k)
        assert a.shape == (r_k, 16) and b.shape == (20, r_k)


def test_all_zero_updates_fall_back_to_data_weights() -> None:
    # Prepare: round one, B = 0 everywhere, so every product is zero
    clients = make_clients([2, 4], 6, 5, seed=4)
    for c in clients:
        for name, (a, b) in c.items():
            c[name] = (a, torch.zeros_like(b))
    # Execute
    a, _ = aggregate_hetlora(clients, [1.0, 3.0], 4)["layers.0.v_proj"]
    # Assert
    expected = 0.75 * clients[1]["layers.0.v_proj"][0]
    expected[:2] += 0.25 * clients[0]["layers.0.v_proj"][0]
    torch.testing.assert_close(a, expected)


def test_a_client_above_the_global_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="above the global rank 4"):
        aggregate_hetlora(make_clients([2, 6], 6, 6, seed=0), [1, 1], 4)
