"""Heavy-ball momentum in seed space: an update that stays a weighted sum of seed perturbations.

A step along seed j with scalar g adds g to the velocity's entry j, after the velocity decays by
β; the weights then move by −lr · Σ_j v_j·z_j, one replay of the velocity's seeds (one product
per matrix for low-rank draws). What a client applied over its steps is Σ_t v_t, one total per
seed it used, and those totals are its reply's pairs: replaying them rebuilds its weights as
exactly as replay ever does, and the uplink stays at most one pair per step. A step's scalar
reaches its seed's total with weight (1 − β^(T−t)) / (1 − β) at most 1 / (1 − β).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from federated.zo.perturbation import Target
from federated.zo.replay import replay_
from federated.zo.seed_pool import SeedPool


class SeedMomentum:
    """The velocity and the applied totals over a pool of seeds, for one client's round."""

    def __init__(self, pool: SeedPool, beta: float) -> None:
        if not 0.0 < beta < 1.0:
            raise ValueError(f"momentum must be in (0, 1), got {beta}")
        self.pool, self.beta = pool, beta
        self.velocity = torch.zeros(len(pool), dtype=torch.float64)
        self.applied = torch.zeros(len(pool), dtype=torch.float64)

    def step_(
        self, targets: Sequence[Target], index: int, scalar: float, lr: float, structure: str
    ) -> None:
        """Take the step: decay the velocity, add ``scalar`` along seed ``index``, move the
        targets by −lr · velocity."""
        self.velocity *= self.beta
        self.velocity[index] += scalar
        moved = self.velocity.to(torch.float32)
        replay_(targets, self.pool, moved, lr, structure)
        self.applied += moved.double()  # what the weights actually took, float32 as replayed

    def pairs(self) -> tuple[list[int], list[float]]:
        """(seed index, total) of every seed the steps moved along, in seed order."""
        indices = torch.nonzero(self.applied, as_tuple=False).flatten()
        return indices.tolist(), self.applied[indices].to(torch.float32).tolist()
