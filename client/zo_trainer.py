"""Zeroth-order local training: two forward passes per step along one seed's perturbation.

No autograd graph and no optimizer state: memory stays at inference level. Each step picks a seed
from the pool, measures the loss at w + eps·z and w − eps·z, and moves w along z by the projected
gradient (l₊ − l₋)/(2·eps); the step is sent as (seed index, scalar) and nothing else.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from federated.data.encode import batches
from federated.losses import loss_terms
from federated.zo.perturbation import Target, perturb_
from federated.zo.seed_pool import SeedPool


@dataclass(frozen=True)
class ZoStepsResult:
    """The round's steps as (seed index, scalar gradient) pairs, and what they cost."""

    indices: list[int]
    scalars: list[float]
    loss: float  # mean over steps of (l₊ + l₋) / 2
    seconds: float
    peak_memory_mb: float


def _endless(
    encoded: Sequence[dict], batch_size: int, generator: torch.Generator, pad: int
) -> Iterator[dict]:
    while True:
        yield from batches(encoded, batch_size, generator=generator, pad_token_id=pad)


def train_zo(
    model: torch.nn.Module,
    targets: Sequence[Target],
    pool: SeedPool,
    encoded: Sequence[dict[str, list[int]]],
    task: str,
    *,
    steps: int,
    lr: float,
    eps: float,
    batch_size: int,
    structure: str,
    pad_token_id: int,
    generator: torch.Generator,
    probabilities: torch.Tensor | None = None,
) -> ZoStepsResult:
    """Take ``steps`` zeroth-order steps on ``targets`` in place.

    ``probabilities`` (FedKSeed-Pro) weights the choice of seeds; uniform when None.
    """
    if not encoded:
        raise ValueError("this client has no training examples")
    model.eval()  # dropout would make l₊ and l₋ differ by more than the perturbation
    stream = _endless(encoded, batch_size, generator, pad_token_id)
    weights = torch.ones(len(pool)) if probabilities is None else probabilities
    indices = torch.multinomial(weights, steps, replacement=True, generator=generator).tolist()
    scalars, losses = [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for index in indices:
            batch = next(stream)
            seed = pool[index]
            perturb_(targets, seed, eps, structure)
            plus = float(loss_terms(model, batch, task).mean_loss())
            perturb_(targets, seed, -2 * eps, structure)
            minus = float(loss_terms(model, batch, task).mean_loss())
            scalar = (plus - minus) / (2 * eps)
            # Back to w, and the step along z, in one pass over the weights.
            perturb_(targets, seed, eps - lr * scalar, structure)
            scalars.append(scalar)
            losses.append((plus + minus) / 2)
    return ZoStepsResult(
        indices=indices,
        scalars=scalars,
        loss=sum(losses) / len(losses),
        seconds=time.perf_counter() - start,
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
