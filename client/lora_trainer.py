"""First-order local training of the LoRA weights (and a classifier head) with AdamW."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from federated.config import TrainSettings
from federated.data.encode import batches
from federated.model.compute import autocast, loss_scaler, model_device
from federated.model.losses import loss_terms
from federated.protocol.optimizer_bound import ADAMW_BETAS


@dataclass(frozen=True)
class TrainResult:
    """What one client's local round did and cost."""

    loss: float  # mean over the round's steps of each step's loss
    steps: int
    examples_seen: int
    seconds: float
    peak_memory_mb: float  # peak resident memory of the process so far


def _endless_batches(
    encoded: Sequence[dict[str, list[int]]],
    batch_size: int,
    generator: torch.Generator,
    pad_token_id: int,
) -> Iterator[dict[str, torch.Tensor]]:
    while True:
        yield from batches(encoded, batch_size, generator=generator, pad_token_id=pad_token_id)


def train_lora(
    model: torch.nn.Module,
    encoded: Sequence[dict[str, list[int]]],
    task: str,
    settings: TrainSettings,
    *,
    pad_token_id: int,
    generator: torch.Generator,
) -> TrainResult:
    """Take the round's local steps on the trainable parameters of ``model``, in place.

    A fresh optimizer each round: its state would otherwise leak across the simulated clients
    that share this process, and FedAvg-style methods restart it on the new global model anyway.
    The forward runs under ``settings.precision``'s autocast on the model's device; fp16 scales
    the loss (and skips a step whose gradients overflowed).
    """
    if not encoded:
        raise ValueError("this client has no training examples")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=settings.lr, weight_decay=settings.weight_decay, betas=ADAMW_BETAS
    )
    steps = settings.steps_for(len(encoded))
    model.train()
    start = time.perf_counter()
    losses: list[float] = []
    seen = 0
    stream = _endless_batches(encoded, settings.batch_size, generator, pad_token_id)
    device = model_device(model)
    scaler = loss_scaler(device, settings.precision)
    for _ in range(steps):
        batch = next(stream)
        with autocast(device, settings.precision):
            loss = loss_terms(model, batch, task).mean_loss()
        optimizer.zero_grad(set_to_none=True)
        (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradient, not the scaled one
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        losses.append(float(loss.detach()))
        seen += int(batch["input_ids"].shape[0])
    optimizer.zero_grad(set_to_none=True)  # the round is over: keep no gradient memory
    model.eval()
    return TrainResult(
        loss=sum(losses) / len(losses),
        steps=steps,
        examples_seen=seen,
        seconds=time.perf_counter() - start,
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
