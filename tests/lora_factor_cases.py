"""Realistic client LoRA factors for the strategy tests: a shared start, then independent drift.

Every client starts a round from the same global (A0, B0), as after a broadcast, and moves away
from it by its own noise, as local training on its own data would. A0 has LoRA's init scale
(entries of size 1/sqrt(d_in), as LoRA initialises A); B0 is small but not zero, as after
a few rounds. With per-client ranks, client k starts from the first r_k components of (A0, B0),
as HetLoRA and FlexLoRA clients do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from strategies.lora_factors import Factors

MODULES = ("layers.0.q_proj", "layers.0.v_proj")


def make_clients(
    ranks: Sequence[int],
    d_out: int,
    d_in: int,
    *,
    seed: int,
    modules: Sequence[str] = MODULES,
    drift: float = 0.3,
    b_scale: float = 0.02,
    dtype: torch.dtype = torch.float32,
) -> list[Factors]:
    """One ``Factors`` per entry of ``ranks`` (client k has rank ``ranks[k]`` in every module).

    ``drift`` is each client's movement relative to the factors' own scale; ``b_scale`` the size
    of B0's entries (the drift of B is ``drift`` times the entries' scale, ``b_scale``).
    """
    g = torch.Generator().manual_seed(seed)
    top = max(ranks)
    a_scale = d_in**-0.5
    clients: list[Factors] = [{} for _ in ranks]
    for name in modules:
        a0 = torch.randn(top, d_in, generator=g, dtype=torch.float64) * a_scale
        b0 = torch.randn(d_out, top, generator=g, dtype=torch.float64) * b_scale
        for client, rank in zip(clients, ranks, strict=True):
            a = a0[:rank] + drift * a_scale * torch.randn(
                rank, d_in, generator=g, dtype=torch.float64
            )
            b = b0[:, :rank] + drift * b_scale * torch.randn(
                d_out, rank, generator=g, dtype=torch.float64
            )
            client[name] = (a.to(dtype), b.to(dtype))
    return clients


def make_weights(n: int, *, seed: int) -> list[float]:
    """Example counts per client, unequal (10 to 500) as with a non-IID partition."""
    g = torch.Generator().manual_seed(seed + 7919)
    return torch.randint(10, 501, (n,), generator=g).double().tolist()


def reference_mean_of_products(clients: Sequence[Factors], weights: Sequence[float]) -> dict:
    """Σ_k p_k B_k A_k per module, written out from the definition in float64."""
    total = sum(weights)
    return {
        name: sum(
            (w / total) * (c[name][1].double() @ c[name][0].double())
            for w, c in zip(weights, clients, strict=True)
        )
        for name in clients[0]
    }


def tail_bound(matrix: torch.Tensor, rank: int) -> float:
    """sqrt(Σ_{i>rank} σ_i²): no rank-``rank`` matrix is closer to ``matrix`` (Eckart–Young)."""
    s = torch.linalg.svdvals(matrix.double())
    return float(s[rank:].square().sum().sqrt())
