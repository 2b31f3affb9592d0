"""A model rebuilt from the base weights and the seed sums, with a replay cache.

The cache keeps the model at the sums it last rebuilt and replays only the seeds whose sums
changed since: a client that served one round catches up on the next by replaying the few seeds
of that round, not all K. It is exact up to float rounding; ``cache=False`` rebuilds from w0
every time, the bit-for-bit path, and keeps a copy of w0 for it.

A client's own local steps are sums too (w moved by −lr·g·z_j for each step along seed j), so the
cached model never copies its weights to undo them: it counts them into the sums it reflects, and
the next load replays them away together with the round's new global sums, in one pass. Memory
stays at the model's own size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from federated.zo.perturbation import Target
from federated.zo.replay import replay_
from federated.zo.seed_pool import SeedPool
from federated.zo.targets import restore_, snapshot


class ZoModel:
    """A model, its zeroth-order targets, and the seed sums its weights currently reflect."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        targets: list[Target],
        pool: SeedPool,
        *,
        lr: float,
        structure: str,
        cache: bool = True,
        hybrid: dict[str, torch.nn.Parameter] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.targets, self.pool = model, tokenizer, targets, pool
        self.lr, self.structure, self.cache = lr, structure, cache
        self.base = None if cache else snapshot(targets)
        self.applied = torch.zeros(len(pool))
        # Modules that train first-order (``federated.zo.hybrid``), by wire key; set from each
        # message, so nothing of one client's head survives into the next.
        self.hybrid = hybrid or {}
        self.mask_digest: str | None = None  # zo.params = sensitive: the mask its targets follow
        self.frozen_bytes_saved = 0  # zo.frozen-dtype: what storing the matrices lower saves
        for param in model.parameters():
            # No autograd but through the hybrid modules: memory stays at inference level.
            param.requires_grad_(False)
        for param in self.hybrid.values():
            param.requires_grad_(True)

    def load(self, sums: torch.Tensor) -> int:
        """Make the weights w0 − lr·Σ_j sums[j]·z_j; returns how many seeds were replayed."""
        sums = sums.to(torch.float32)
        if self.cache:
            replayed = replay_(
                self.targets, self.pool, sums - self.applied, self.lr, self.structure
            )
        else:
            assert self.base is not None
            restore_(self.targets, self.base)
            replayed = replay_(self.targets, self.pool, sums, self.lr, self.structure)
        self.applied = sums.clone()
        return replayed

    def moved_by(self, indices: Sequence[int], scalars: Sequence[float]) -> None:
        """Local steps moved the weights along these seeds: reflect them in ``applied``."""
        if not self.cache:
            raise RuntimeError("a model without the replay cache rebuilds from w0; it cannot move")
        for index, scalar in zip(indices, scalars, strict=True):
            self.applied[index] += scalar
