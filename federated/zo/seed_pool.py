"""The pool of K candidate seeds that every party of a run shares (FedKSeed).

A perturbation is named by its index in the pool, so a step travels as (index, scalar): a few
bytes, whatever the size of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Seeds are drawn below 2**62 so they fit torch.Generator's int64 and Flower's int metrics.
_SEED_LIMIT = 2**62


@dataclass(frozen=True)
class SeedPool:
    """K seeds fixed at the start of a run, derived from the run seed alone."""

    seeds: tuple[int, ...]

    @classmethod
    def from_run_seed(cls, run_seed: int, size: int) -> SeedPool:
        if size < 1:
            raise ValueError(f"a seed pool needs at least one seed, got {size}")
        generator = torch.Generator().manual_seed(run_seed)
        drawn = torch.randint(0, _SEED_LIMIT, (size,), generator=generator, dtype=torch.int64)
        return cls(tuple(int(seed) for seed in drawn))

    def __len__(self) -> int:
        return len(self.seeds)

    def __getitem__(self, index: int) -> int:
        return self.seeds[index]
