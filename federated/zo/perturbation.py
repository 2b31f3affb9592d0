"""Perturbation vectors drawn from a seed, identical on every device.

z is drawn on the CPU in float32 from a ``torch.Generator`` seeded with the pool's seed, then cast
to the parameter's dtype and device: the same seed gives the same vector everywhere, so a server
and its clients replay the same model. It is never materialised as one vector of the model's size.

Two structures:
- ``dense``: every entry standard normal, the estimator of FedKSeed and MeZO. Drawn one tensor at a
  time, in target order.
- ``low-rank``: each matrix gets u·vᵀ with u, v standard normal (entries keep unit variance),
  vectors stay dense. Replaying K seeds then costs one matrix product per matrix,
  Σ_j c_j u_j v_jᵀ = U·diag(c)·Vᵀ, instead of K dense draws of the whole model. A seed's factors
  are few (rows plus columns of each matrix), so they are drawn in one call, in target order:
  u₁, v₁, u₂, v₂, ..., each vector's entries where it stands.

A target may be a whole tensor or a fixed set of its entries (sparse training): only those
entries are drawn and moved.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

STRUCTURES = ("dense", "low-rank")


@dataclass(frozen=True)
class Target:
    """A tensor that zeroth-order steps move, whole or at ``indices`` of its flattened entries."""

    tensor: torch.Tensor
    indices: torch.Tensor | None = None

    @cached_property  # asked for every draw of every seed: worth keeping
    def low_rank_shape(self) -> tuple[int, int] | None:
        """(rows, cols) when a low-rank draw applies: a whole matrix."""
        if self.indices is None and self.tensor.dim() == 2:
            return self.tensor.shape[0], self.tensor.shape[1]
        return None

    @cached_property
    def size(self) -> int:
        return self.tensor.numel() if self.indices is None else self.indices.numel()


def check_structure(structure: str) -> None:
    if structure not in STRUCTURES:
        raise ValueError(
            f"perturbation structure {structure!r} is not one of {', '.join(STRUCTURES)}"
        )


def low_rank_layout(targets: Sequence[Target]) -> list[tuple[int, ...]]:
    """Per target, the lengths of its pieces in a low-rank seed's one draw: (rows, cols) of a
    matrix, (entries,) of anything else."""
    return [t.low_rank_shape or (t.size,) for t in targets]


def draw_low_rank(
    targets: Sequence[Target], generator: torch.Generator, out: torch.Tensor | None = None
) -> list[tuple[torch.Tensor, ...]]:
    """A low-rank seed's draw, split per target into (u, v) or (z,); ``out`` takes it in place
    (float32, as long as the layout), so that replay can stack seeds without copying."""
    layout = low_rank_layout(targets)
    total = sum(sum(pieces) for pieces in layout)
    flat = (torch.empty(total) if out is None else out).normal_(generator=generator)
    split = iter(flat.split([n for pieces in layout for n in pieces]))
    draws = []
    for target, pieces in zip(targets, layout, strict=True):
        draw = tuple(next(split) for _ in pieces)
        whole = len(draw) == 1 and target.indices is None
        draws.append((draw[0].view(target.tensor.shape),) if whole else draw)
    return draws


def draw_seed(
    targets: Sequence[Target], seed: int, structure: str
) -> Iterator[tuple[Target, tuple[torch.Tensor, ...]]]:
    """z_seed, target by target: (u, v) for a low-rank matrix, else (z,) over its entries."""
    check_structure(structure)
    generator = torch.Generator().manual_seed(seed)
    if structure == "low-rank":
        yield from zip(targets, draw_low_rank(targets, generator), strict=True)
        return
    for target in targets:
        size = target.tensor.shape if target.indices is None else (target.size,)
        yield target, (torch.randn(size, generator=generator, dtype=torch.float32),)


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
    """In place: every target += scale · z_seed."""
    with torch.no_grad():
        for target, draw in draw_seed(targets, seed, structure):
            apply_draw(target, draw, scale)


def dense_vector(targets: Sequence[Target], seed: int, structure: str) -> torch.Tensor:
    """z_seed over all targets as one flat float32 vector: for tests and small models only."""
    pieces = [
        torch.outer(*draw).flatten() if len(draw) == 2 else draw[0].flatten()
        for _, draw in draw_seed(targets, seed, structure)
    ]
    return torch.cat(pieces)
