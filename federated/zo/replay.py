"""Rebuild the current model from the base weights and the per-seed sums of scalar gradients.

With a constant learning rate, the model after any number of rounds is
w = w0 − lr · Σ_j c_j · z_j, where c_j sums every scalar ever taken along seed j: K replays,
whatever the number of rounds. Server and clients call the same function on the same sums, in the
same order (ascending seed index, fixed blocks), so they rebuild the same weights bit for bit at
the same torch thread count (fedtune runs one thread per process).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from federated.zo.perturbation import (
    Target,
    apply_draw,
    check_structure,
    draw_low_rank,
    draw_seed,
    low_rank_layout,
)
from federated.zo.seed_pool import SeedPool

# Seeds replayed together: a block's low-rank draws (U and V of every matrix) are held at once.
BLOCK = 64


def replay_(
    targets: Sequence[Target],
    pool: SeedPool,
    sums: torch.Tensor,
    lr: float,
    structure: str,
) -> int:
    """In place: targets −= lr · Σ_j sums[j] · z_j over the seeds whose sum is not zero.

    Returns the number of seeds replayed. Per block of seeds, the low-rank structure applies each
    matrix's draws as one product (U·diag(c))·Vᵀ and each vector's as one matrix-vector product;
    with dense draws, a sparse target sums its draws before one scatter into the tensor.
    """
    check_structure(structure)
    if sums.shape != (len(pool),):
        raise ValueError(f"expected {len(pool)} seed sums, got shape {tuple(sums.shape)}")
    active = [int(j) for j in torch.nonzero(sums, as_tuple=False).flatten()]
    replay_block = _low_rank_block if structure == "low-rank" else _dense_block
    with torch.no_grad():
        for start in range(0, len(active), BLOCK):
            block = active[start : start + BLOCK]
            scales = torch.tensor([-lr * float(sums[j]) for j in block], dtype=torch.float32)
            replay_block(targets, [pool[j] for j in block], scales)
    return len(active)


def _low_rank_block(targets: Sequence[Target], seeds: Sequence[int], scales: torch.Tensor) -> None:
    # Row k holds seed k's whole draw; each target's pieces are column slices of it.
    layout = low_rank_layout(targets)
    rows = torch.empty(len(seeds), sum(sum(pieces) for pieces in layout))
    for k, seed in enumerate(seeds):
        draw_low_rank(targets, torch.Generator().manual_seed(seed), out=rows[k])
    start = 0
    for target, pieces in zip(targets, layout, strict=True):
        slices = []
        for n in pieces:
            slices.append(rows[:, start : start + n])
            start += n
        tensor = target.tensor
        if len(slices) == 2:  # Σ_k c_k u_k v_kᵀ = Uᵀ·(c ⊙ V), U and V with a seed per row
            u = slices[0].to(device=tensor.device, dtype=tensor.dtype)
            v = (slices[1] * scales.unsqueeze(1)).to(device=tensor.device, dtype=tensor.dtype)
            tensor.addmm_(u.T, v)
            continue
        moved = (scales @ slices[0]).to(device=tensor.device, dtype=tensor.dtype)
        if target.indices is None:
            tensor.add_(moved.view_as(tensor))
        else:
            tensor.view(-1).index_add_(0, target.indices, moved)


def _dense_block(targets: Sequence[Target], seeds: Sequence[int], scales: torch.Tensor) -> None:
    # A sparse target gathers the block's scaled draws first: one scatter instead of one per seed.
    sparse = [torch.zeros(t.size) if t.indices is not None else None for t in targets]
    for seed, scale in zip(seeds, scales.tolist(), strict=True):
        for (target, draw), summed in zip(draw_seed(targets, seed, "dense"), sparse, strict=True):
            if summed is None:
                apply_draw(target, draw, scale)
            else:
                summed.add_(draw[0], alpha=scale)
    for target, summed in zip(targets, sparse, strict=True):
        if summed is not None:
            tensor = target.tensor
            tensor.view(-1).index_add_(0, target.indices, summed.to(tensor.device, tensor.dtype))
