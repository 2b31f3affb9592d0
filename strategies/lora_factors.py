"""Shared math on LoRA factor pairs, for the strategies that aggregate A and B with care.

A client's adapter for one module is a pair (A [r, d_in], B [d_out, r]) whose product B @ A is the
update the model actually sees. Averaging A and B separately gives mean(B)·mean(A), which is not
the mean of the products; the helpers here let each strategy state what it does about that gap.
The LoRA scale alpha/r is the same for every client, so it factors out of all of this math.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Pair = tuple[torch.Tensor, torch.Tensor]
"""(A [r, d_in], B [d_out, r]) for one adapted module."""

Factors = dict[str, Pair]
"""Module name -> (A, B)."""


def _check_pair(pair: Pair, where: str = "pair") -> None:
    a, b = pair
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(
            f"{where}: A and B must be matrices, got shapes {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if a.shape[0] != b.shape[1]:
        raise ValueError(
            f"{where}: A has rank {a.shape[0]} but B has rank {b.shape[1]} "
            f"(A {tuple(a.shape)}, B {tuple(b.shape)})"
        )


def rank_of(pair: Pair) -> int:
    """The LoRA rank r of a pair: A's rows, which are B's columns."""
    _check_pair(pair)
    return int(pair[0].shape[0])


def normalised_weights(weights: Sequence[float], n: int) -> list[float]:
    """Client weights w_k scaled to p_k = w_k / Σw; one per client, non-negative, positive sum."""
    weights = [float(w) for w in weights]
    if len(weights) != n or n == 0:
        raise ValueError(f"need one weight per client, got {n} clients, {len(weights)} weights")
    if any(w < 0 for w in weights):
        raise ValueError(f"weights must be non-negative, got {weights}")
    total = sum(weights)
    if total <= 0:
        raise ValueError(f"weights must add up to a positive number, got {total}")
    return [w / total for w in weights]


def weighted_mean(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Sum of w_i·t_i over i with the weights normalised to one, in float64 for stable sums."""
    if len(tensors) != len(weights) or not tensors:
        raise ValueError(
            f"need one weight per tensor, got {len(tensors)} tensors, {len(weights)} weights"
        )
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must add up to a positive number, got {total}")
    acc = torch.zeros_like(tensors[0], dtype=torch.float64)
    for tensor, weight in zip(tensors, weights, strict=True):
        acc += tensor.to(torch.float64) * (weight / total)
    return acc.to(tensors[0].dtype)


def product(pair: Pair) -> torch.Tensor:
    """The update a pair applies to the frozen weight: B @ A, shape [d_out, d_in]."""
    _check_pair(pair)
    a, b = pair
    return b @ a


def check_same_modules(clients: Sequence[Factors], *, same_rank: bool = False) -> list[str]:
    """Sorted module names shared by every client, after checking that the pairs fit together.

    Parameters
    ----------
    clients
        One ``Factors`` per client.
    same_rank
        Also require every client to use the same rank per module (FedEx-LoRA, LoRA-FAIR); ranks
        may otherwise differ across clients (FLoRA, FlexLoRA, HetLoRA).

    Raises
    ------
    ValueError
        Naming the modules the clients disagree on, a pair whose A and B ranks differ, or a module
        whose d_in / d_out (or rank, with ``same_rank``) differs across clients.
    """
    if not clients:
        raise ValueError("need at least one client")
    names = set(clients[0])
    for k, client in enumerate(clients[1:], start=1):
        if set(client) != names:
            raise ValueError(
                f"client {k} disagrees with client 0 on module names: {sorted(names ^ set(client))}"
            )
    ordered = sorted(names)
    for name in ordered:
        for k, client in enumerate(clients):
            _check_pair(client[name], where=f"client {k}, module '{name}'")
        a0, b0 = clients[0][name]
        for k, client in enumerate(clients[1:], start=1):
            a, b = client[name]
            if a.shape[1] != a0.shape[1] or b.shape[0] != b0.shape[0]:
                raise ValueError(
                    f"module '{name}': client {k} has d_out x d_in = {b.shape[0]} x {a.shape[1]}, "
                    f"client 0 has {b0.shape[0]} x {a0.shape[1]}"
                )
            if same_rank and a.shape[0] != a0.shape[0]:
                raise ValueError(
                    f"module '{name}': client {k} has rank {a.shape[0]}, client 0 has rank "
                    f"{a0.shape[0]}; this strategy needs equal ranks"
                )
    return ordered


def mean_of_products(
    clients: Sequence[Factors], weights: Sequence[float], *, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The ideal global update per module, M = Σ_k p_k B_k A_k; ranks may differ across clients.

    Accumulated in float64 (sums of many small products lose digits in float32) and returned in
    the clients' dtype, or in ``dtype`` when given (strategies that subtract from M ask float64).
    """
    names = check_same_modules(clients)
    p = normalised_weights(weights, len(clients))
    out: dict[str, torch.Tensor] = {}
    for name in names:
        a0, b0 = clients[0][name]
        acc = torch.zeros(b0.shape[0], a0.shape[1], dtype=torch.float64)
        for p_k, client in zip(p, clients, strict=True):
            a, b = client[name]
            acc += p_k * (b.to(torch.float64) @ a.to(torch.float64))
        out[name] = acc.to(dtype or a0.dtype)
    return out


def discrepancy(pair: Pair, target: torch.Tensor) -> float:
    """||B @ A - target||_F, in float64: how far a pair's update is from the one it should apply."""
    _check_pair(pair)
    a, b = (t.to(torch.float64) for t in pair)
    return float(torch.linalg.matrix_norm(b @ a - target.to(torch.float64)))


def best_rank_approximation(matrix: torch.Tensor, rank: int) -> Pair:
    """The closest rank-``rank`` pair to ``matrix`` in Frobenius norm (Eckart–Young).

    With M = U S Vᵀ, B = U_r sqrt(S_r) and A = sqrt(S_r) V_rᵀ: the singular value is split evenly
    so neither factor carries all the scale (as LoRA's own factors do not). Components come in
    decreasing singular value, so ``A[:q], B[:, :q]`` is itself the best rank-q approximation for
    every q <= rank; a client of smaller rank takes that prefix. Asking for more rank than
    min(d_out, d_in) pads with zero components. Computed in float64, returned in ``matrix``'s dtype.
    """
    if matrix.ndim != 2:
        raise ValueError(f"need a matrix, got shape {tuple(matrix.shape)}")
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    u, s, vh = torch.linalg.svd(matrix.to(torch.float64), full_matrices=False)
    q = min(rank, s.shape[0])
    root = s[:q].sqrt()
    b = u[:, :q] * root
    a = root[:, None] * vh[:q]
    return pad_rank((a.to(matrix.dtype), b.to(matrix.dtype)), rank)


def pad_rank(pair: Pair, rank: int) -> Pair:
    """Append zero rows to A and zero columns to B up to ``rank``; the product does not change."""
    current = rank_of(pair)
    if rank < current:
        raise ValueError(f"cannot pad a rank-{current} pair down to rank {rank}")
    a, b = pair
    extra = rank - current
    return (
        torch.cat([a, a.new_zeros(extra, a.shape[1])], dim=0),
        torch.cat([b, b.new_zeros(b.shape[0], extra)], dim=1),
    )


def truncate_rank(pair: Pair, rank: int) -> Pair:
    """Keep the first ``rank`` components, A[:rank] and B[:, :rank] (cloned, not views)."""
    current = rank_of(pair)
    if rank > current:
        raise ValueError(f"cannot truncate a rank-{current} pair up to rank {rank}")
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    a, b = pair
    return a[:rank].clone(), b[:, :rank].clone()
