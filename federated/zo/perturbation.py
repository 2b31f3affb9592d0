"""Perturbation vectors drawn from a seed, one tensor at a time, identical on every device.

z is drawn on the CPU in float32 from a ``torch.Generator`` seeded with the pool's seed, then cast
to the parameter's dtype and device: the same seed gives the same vector everywhere, so a server
and its clients replay the same model. It is never materialised as one vector of the model's size.

Two structures:
- ``dense``: every entry standard normal, the estimator of FedKSeed and MeZO.
- ``low-rank``: each matrix gets u·vᵀ with u, v standard normal (entries keep unit variance),
  vectors stay dense. Replaying K seeds then costs one matrix product per matrix,
  Σ_j c_j u_j v_jᵀ = U·diag(c)·Vᵀ, instead of K dense draws of the whole model.

A target may be a whole tensor or a fixed set of its entries (sparse training): only those
entries are drawn and moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

STRUCTURES = ("dense", "low-rank")


@dataclass(frozen=True)
class Target:
    """A tensor that zeroth-order steps move, whole or at ``indices`` of its flattened entries."""

    tensor: torch.Tensor
    indices: torch.Tensor | None = None

    @property
    def low_rank_shape(self) -> tuple[int, int] | None:
        """(rows, cols) when a low-rank draw applies: a whole matrix."""
        if self.indices is None and self.tensor.dim() == 2:
            return self.tensor.shape[0], self.tensor.shape[1]
        return None

    @property
    def size(self) -> int:
        return self.tensor.numel() if self.indices is None else self.indices.numel()


def check_structure(structure: str) -> None:
    if structure not in STRUCTURES:
        raise ValueError(
            f"perturbation structure {structure!r} is not one of {', '.join(STRUCTURES)}"
        )


def draw_for(
    target: Target, generator: torch.Generator, structure: str
) -> tuple[torch.Tensor, ...]:
    """(u, v) for a low-rank matrix, else (z,) over the target's entries; float32 on the CPU."""
    shape = target.low_rank_shape
    if structure == "low-rank" and shape is not None:
        u = torch.randn(shape[0], generator=generator, dtype=torch.float32)
        v = torch.randn(shape[1], generator=generator, dtype=torch.float32)
        return u, v
    size = target.tensor.shape if target.indices is None else (target.size,)
    return (torch.randn(size, generator=generator, dtype=torch.float32),)


def apply_draw(target: Target, draw: tuple[torch.Tensor, ...], scale: float) -> None:
    tensor = target.tensor
    parts = [part.to(device=tensor.device, dtype=tensor.dtype) for part in draw]
    if len(parts) == 2:
        tensor.addr_(parts[0], parts[1], alpha=scale)  # rank-one update, z never materialised
    elif target.indices is None:
        tensor.add_(parts[0], alpha=scale)
    else:
        tensor.view(-1).index_add_(0, target.indices, parts[0], alpha=scale)


def perturb_(targets: Sequence[Target], seed: int, scale: float, structure: str) -> None:
    """In place: every target += scale · z_seed, drawing one tensor at a time in target order."""
    check_structure(structure)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for target in targets:
            apply_draw(target, draw_for(target, generator, structure), scale)


def dense_vector(targets: Sequence[Target], seed: int, structure: str) -> torch.Tensor:
    """z_seed over all targets as one flat float32 vector: for tests and small models only."""
    check_structure(structure)
    generator = torch.Generator().manual_seed(seed)
    pieces = []
    for target in targets:
        draw = draw_for(target, generator, structure)
        pieces.append(torch.outer(*draw).flatten() if len(draw) == 2 else draw[0].flatten())
    return torch.cat(pieces)
