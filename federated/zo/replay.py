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

from federated.zo.perturbation import Target, apply_draw, check_structure, draw_for
from federated.zo.seed_pool import SeedPool

# Seeds replayed together on the low-rank path: U and V of a block are held in memory at once.
BLOCK = 64


def replay_(
    targets: Sequence[Target],
    pool: SeedPool,
    sums: torch.Tensor,
    lr: float,
    structure: str,
) -> int:
    """In place: targets −= lr · Σ_j sums[j] · z_j over the seeds whose sum is not zero.

    Returns the number of seeds replayed. The low-rank structure applies each block of seeds to a
    matrix as one product (U·diag(c))·Vᵀ; vectors and sparse targets are drawn seed by seed.
    """
    check_structure(structure)
    if sums.shape != (len(pool),):
        raise ValueError(f"expected {len(pool)} seed sums, got shape {tuple(sums.shape)}")
    active = [int(j) for j in torch.nonzero(sums, as_tuple=False).flatten()]
    with torch.no_grad():
        for start in range(0, len(active), BLOCK):
            _replay_block(targets, pool, sums, active[start : start + BLOCK], lr, structure)
    return len(active)


def _replay_block(
    targets: Sequence[Target],
    pool: SeedPool,
    sums: torch.Tensor,
    block: list[int],
    lr: float,
    structure: str,
) -> None:
    low_rank = [t.low_rank_shape is not None and structure == "low-rank" for t in targets]
    us: list[list[torch.Tensor]] = [[] for _ in targets]
    vs: list[list[torch.Tensor]] = [[] for _ in targets]
    for j in block:
        scale = -lr * float(sums[j])
        generator = torch.Generator().manual_seed(pool[j])
        for i, target in enumerate(targets):
            draw = draw_for(target, generator, structure)
            if low_rank[i]:
                us[i].append(draw[0] * scale)
                vs[i].append(draw[1])
            else:
                apply_draw(target, draw, scale)
    for i, target in enumerate(targets):
        if low_rank[i] and us[i]:
            u = torch.stack(us[i], dim=1).to(device=target.tensor.device, dtype=target.tensor.dtype)
            v = torch.stack(vs[i], dim=1).to(device=target.tensor.device, dtype=target.tensor.dtype)
            target.tensor.addmm_(u, v.T)
