"""Zeroth-order local training: two forward passes per step along one seed's perturbation.

No autograd graph and no optimizer state: memory stays at inference level. Each step picks a seed
from the pool, measures the loss at w + eps·z and w − eps·z, and moves w along z by the projected
gradient (l₊ − l₋)/(2·eps); the step is sent as (seed index, scalar) and nothing else.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from federated.data.encode import batches, collate
from federated.model.losses import loss_terms
from federated.privacy.sampling import poisson_batches
from federated.privacy.secret_randomness import gaussian_noise
from federated.zo.hybrid import hybrid_step_
from federated.zo.momentum import SeedMomentum
from federated.zo.perturbation import Target, perturb_
from federated.zo.seed_pool import SeedPool


@dataclass(frozen=True)
class ZoPrivacy:
    """DP-ZO: each example's scalar gradient clipped to ``clip``, Gaussian noise of std
    ``noise_multiplier · clip`` on their sum, divided by ``expected_batch`` (from the client's
    noised record count), Poisson batches at ``sample_rate``."""

    noise_multiplier: float
    clip: float
    sample_rate: float
    expected_batch: float
    generator: torch.Generator  # secret: sampling and noise


@dataclass(frozen=True)
class ZoStepsResult:
    """The round's steps as (seed index, scalar gradient) pairs (with momentum, each seed's
    applied total), and what they cost."""

    indices: list[int]
    scalars: list[float]
    steps: int
    loss: float  # mean over steps of (l₊ + l₋) / 2
    seconds: float
    peak_memory_mb: float


def _example_losses(model: torch.nn.Module, batch: dict, task: str, hybrid: bool) -> torch.Tensor:
    """Each example's loss (its mean over scored tokens): one record, one term. With ``hybrid``
    modules, their gradient of the batch's mean loss is added to their ``.grad``."""
    with torch.enable_grad() if hybrid else contextlib.nullcontext():
        losses = loss_terms(model, batch, task).per_example()
        if hybrid:
            losses.mean().backward()
    return losses.detach()


def private_scalar(per_example: torch.Tensor, privacy: ZoPrivacy) -> float:
    """Clip each example's scalar to ±C, add N(0, (σC)²) to the sum, divide by the expected
    batch size: the Gaussian mechanism on a sum whose sensitivity is C."""
    clipped = per_example.double().clamp(-privacy.clip, privacy.clip).sum()
    noise = gaussian_noise((), privacy.noise_multiplier * privacy.clip, privacy.generator)
    return float(clipped + noise) / max(1.0, privacy.expected_batch)


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
    privacy: ZoPrivacy | None = None,
    hybrid: Mapping[str, torch.nn.Parameter] | None = None,
    hybrid_lr: float = 0.0,
    momentum: float = 0.0,
) -> ZoStepsResult:
    """Take ``steps`` zeroth-order steps on ``targets`` in place.

    ``probabilities`` (FedKSeed-Pro) weights the choice of seeds; uniform when None. With
    ``privacy`` each step's batch is a Poisson draw and its scalar the clipped, noised mean of the
    examples' scalars (DP-ZO): the only thing a step reveals is that one number. ``hybrid``
    parameters take an SGD step of ``hybrid_lr`` each step, along the mean of their gradients in
    the step's two forward passes (``federated.zo.hybrid``). With ``momentum`` the steps are
    heavy-ball steps in seed space and the result's pairs are each seed's applied total
    (``federated.zo.momentum``), at most one per step.
    """
    if hybrid and privacy is not None:
        raise ValueError("hybrid modules take unclipped first-order steps: no record-level DP")
    hybrid = hybrid or {}
    if not encoded:
        raise ValueError("this client has no training examples")
    model.eval()  # dropout would make l₊ and l₋ differ by more than the perturbation
    if privacy is None:
        stream = _endless(encoded, batch_size, generator, pad_token_id)
    else:
        draws = poisson_batches(len(encoded), privacy.sample_rate, steps, privacy.generator)
        stream = (
            collate([encoded[i] for i in chosen], pad_token_id) if chosen else None
            for chosen in draws
        )
    weights = torch.ones(len(pool)) if probabilities is None else probabilities
    indices = torch.multinomial(weights, steps, replacement=True, generator=generator).tolist()
    scalars, losses = [], []
    heavy_ball = SeedMomentum(pool, momentum) if momentum else None

    def move(seed_index: int, back: float, scalar: float) -> None:
        """Undo ``back`` along the step's seed and take the step, in one pass where it can."""
        if heavy_ball is None:
            perturb_(targets, pool[seed_index], back - lr * scalar, structure)
            return
        if back:
            perturb_(targets, pool[seed_index], back, structure)
        heavy_ball.step_(targets, seed_index, scalar, lr, structure)

    start = time.perf_counter()
    # Inference mode forbids the hybrid modules' backward passes; no_grad keeps the rest free.
    with torch.no_grad() if hybrid else torch.inference_mode():
        for index in indices:
            batch = next(stream)
            seed = pool[index]
            if batch is None:  # an empty Poisson draw: the step is the noise alone
                scalar = private_scalar(torch.zeros(0), privacy)
                move(index, 0.0, scalar)
            else:
                perturb_(targets, seed, eps, structure)
                plus = _example_losses(model, batch, task, bool(hybrid))
                perturb_(targets, seed, -2 * eps, structure)
                minus = _example_losses(model, batch, task, bool(hybrid))
                per_example = (plus - minus) / (2 * eps)
                if privacy is None:
                    scalar = float(per_example.mean())
                else:
                    scalar = private_scalar(per_example, privacy)
                move(index, eps, scalar)  # back to w, and the step
                hybrid_step_(hybrid, hybrid_lr, passes=2)
                losses.append(float((plus + minus).mean()) / 2)
            scalars.append(scalar)
    if heavy_ball is not None:
        indices, scalars = heavy_ball.pairs()
    return ZoStepsResult(
        indices=indices,
        scalars=scalars,
        steps=steps,
        loss=sum(losses) / len(losses) if losses else 0.0,
        seconds=time.perf_counter() - start,
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
