"""Zeroth-order steps on LoRA factors: how a mixed federation's weak devices join one adapter.

A device with the memory for inference only takes zeroth-order steps on the same factors (and
classifier head) that the first-order clients train, and sends its (seed index, scalar) pairs.
Each step moved the factors by −lr·scalar·z_seed, so the factors it ended at are the ones it
started from moved by −lr·Σ_j c_j·z_j, c_j summing its scalars along seed j: the server replays
that on the factors it sent and aggregates the result with everyone else's factors.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from federated.config import RunConfig
from federated.zo.perturbation import Target
from federated.zo.replay import replay_
from federated.zo.seed_pool import SeedPool


def factor_targets(tensors: Mapping[str, torch.Tensor]) -> list[Target]:
    """The factors as zeroth-order targets, in key order: the order in which the client and
    the server draw each seed's perturbation."""
    return [Target(tensors[key]) for key in sorted(tensors)]


def replay_pairs(
    start: Mapping[str, torch.Tensor],
    indices: torch.Tensor,
    scalars: torch.Tensor,
    pool: SeedPool,
    *,
    lr: float,
    structure: str,
) -> dict[str, torch.Tensor]:
    """The factors that ``start`` becomes after the steps (indices[i], scalars[i])."""
    moved = {key: value.detach().to(torch.float32).clone() for key, value in start.items()}
    sums = torch.zeros(len(pool))
    sums.index_add_(0, indices.to(torch.int64), scalars.to(torch.float32))
    replay_(factor_targets(moved), pool, sums, lr, structure)
    return moved


AUTO_FACTOR_LR = 3e-4  # ZO on the factors of SmolLM2 and MiniLM held at 3e-4 (lr_sweep.py)


def factor_lr(config: RunConfig) -> float:
    """The rate of zeroth-order steps on the factors of a LoRA run: zo.lr, or for 0 (auto)
    one that held for both benchmark models' factors (a LoRA run probes no ZO rate: it cannot
    know before round 1 whether any node will take ZO steps)."""
    return config.zo.lr or AUTO_FACTOR_LR


def factor_steps_problem(config: RunConfig) -> str | None:
    """Why a node of the run of ``config`` may not take zeroth-order steps on its LoRA factors
    on its own say (``mode = zo`` in its node config), or None. The server bounds their number
    by a fixed ``train.local-steps``; record-level DP does not cover them, SecAgg+ cannot mask
    (seed, scalar) pairs."""
    if config.mode != "lora":
        return None
    if config.train.local_steps < 1:
        return "zeroth-order steps on the LoRA factors need a fixed train.local-steps (0 here)"
    if config.dp.record_level:
        return "record-level DP does not cover zeroth-order steps on the LoRA factors"
    if config.secagg.enabled:
        return "SecAgg+ cannot mask the (seed, scalar) pairs of zeroth-order steps"
    return None
