"""Record-level DP-SGD for the LoRA weights, with opacus.

Each step samples every example independently with probability q (Poisson sampling, which the
RDP accountant's amplification assumes), clips each example's gradient to ``max_grad_norm``, adds
Gaussian noise of std ``noise_multiplier · max_grad_norm`` to the sum and divides by the expected
batch size (opacus's ``DPOptimizer``), which the client takes from its noised record count, never
from the exact one. The loss is averaged per example outside the model (for language modelling:
each example's mean over its tokens), so that one example is one record.

Sampling and noise come from a secret generator (``federated.privacy.secret_randomness``), and
the noise is drawn in opacus's secure mode (robust to floating-point attacks).

A logical batch larger than memory allows is taken in chunks of ``dp.record.physical-batch``
examples (virtual steps, as opacus's ``BatchMemoryManager``): each chunk's per-example gradients are
clipped and added to the step's sum, and the noise joins that sum once, after the last chunk.
The released gradient is the one a single pass over the whole batch releases, so the accountant
counts one step at the logical sampling rate.
"""

from __future__ import annotations

import resource
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from opacus import GradSampleModule
from opacus.grad_sample import GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

from client.lora_trainer import TrainResult
from federated.config import TrainSettings
from federated.data.encode import collate
from federated.model.compute import autocast, model_device
from federated.model.losses import loss_terms
from federated.privacy.sampling import poisson_batches
from federated.privacy.secret_randomness import on_device
from federated.protocol.optimizer_bound import ADAMW_BETAS


@contextmanager
def private_model(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    mode: str,
    max_grad_norm: float,
    noise_multiplier: float,
    expected_batch_size: int,
    generator: torch.Generator,
) -> Iterator[tuple[torch.nn.Module, DPOptimizer]]:
    """The model with opacus's per-sample hooks and the optimizer that clips and noises; the
    hooks come off afterwards, because the model is cached and serves plain rounds too."""
    if mode == "ghost":
        wrapped: torch.nn.Module = GradSampleModuleFastGradientClipping(
            model, batch_first=True, loss_reduction="mean", max_grad_norm=max_grad_norm
        )
        optimizer_cls: type[DPOptimizer] = DPOptimizerFastGradientClipping
    else:
        wrapped = GradSampleModule(
            model, batch_first=True, loss_reduction="mean", force_functorch=mode == "functorch"
        )
        optimizer_cls = DPOptimizer
    dp_optimizer = optimizer_cls(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
        generator=generator,
        secure_mode=True,
    )
    try:
        yield wrapped, dp_optimizer
    finally:
        wrapped._close()


def private_gradient(
    wrapped: torch.nn.Module,
    dp_optimizer: DPOptimizer,
    chunks: Sequence[dict],
    task: str,
    mode: str,
    precision: str = "fp32",
) -> float | None:
    """Leave the privatised gradient of one logical batch in each trained parameter's
    ``.grad``: per-example gradients clipped, summed over the batch's ``chunks`` (its physical
    batches), noised once, divided by the expected batch size. No chunks is an empty Poisson
    draw: the noise alone, as the accountant counts it. Returns the batch loss."""
    dp_optimizer.zero_grad(set_to_none=True)
    if not chunks:
        for param in dp_optimizer.params:
            if mode == "ghost":
                param.grad = torch.zeros_like(param)
            else:
                param.grad_sample = param.new_zeros((0, *param.shape))
        dp_optimizer.pre_step()
        return None
    losses = []
    for k, batch in enumerate(chunks):
        if k:
            dp_optimizer.zero_grad(set_to_none=True)  # the clipped sum so far stays
        with autocast(model_device(wrapped), precision):
            per_example = loss_terms(wrapped, batch, task).per_example()
        if mode == "ghost":
            DPTensorFastGradientClipping(wrapped, dp_optimizer, per_example).backward()
        else:
            per_example.mean().backward()
        losses.append(per_example.detach())
        if k < len(chunks) - 1:
            dp_optimizer.signal_skip_step(do_skip=True)  # clip and add; no noise yet
        dp_optimizer.pre_step()
    return float(torch.cat(losses).mean())


def physical_batches(
    encoded: Sequence[dict[str, list[int]]], chosen: Sequence[int], size: int, pad_token_id: int
) -> list[dict]:
    """The examples ``chosen`` in collated chunks of at most ``size`` (0: one chunk)."""
    size = size or max(1, len(chosen))
    return [
        collate([encoded[i] for i in chosen[s : s + size]], pad_token_id)
        for s in range(0, len(chosen), size)
    ]


def train_lora_dp(
    model: torch.nn.Module,
    encoded: Sequence[dict[str, list[int]]],
    task: str,
    settings: TrainSettings,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    sample_rate: float,
    expected_batch: float,
    mode: str,
    pad_token_id: int,
    generator: torch.Generator,
    physical_batch: int = 0,
) -> TrainResult:
    """``settings.local_steps`` DP-SGD steps (AdamW on the privatised gradient), in place, each
    batch taken ``physical_batch`` examples at a time (0: whole).

    ``generator`` drives sampling and noise: a secret one (see the module doc); the noise is
    drawn on the model's device, from a generator there that ``generator`` seeds.
    """
    if not encoded:
        raise ValueError("this client has no training examples")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=settings.lr, weight_decay=settings.weight_decay, betas=ADAMW_BETAS
    )
    expected = max(1, round(expected_batch))
    noise = on_device(generator, model_device(model))
    model.train()
    start = time.perf_counter()
    losses: list[float] = []
    seen = 0
    # opacus's backward hooks fire on frozen embeddings' outputs, which torch warns about on
    # every step; the per-sample gradients of the trained layers are unaffected.
    with (
        warnings.catch_warnings(),
        private_model(model, optimizer, mode, max_grad_norm, noise_multiplier, expected, noise) as (
            wrapped,
            dp_optimizer,
        ),
    ):
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for chosen in poisson_batches(len(encoded), sample_rate, settings.local_steps, generator):
            chunks = physical_batches(encoded, chosen, physical_batch, pad_token_id)
            loss = private_gradient(wrapped, dp_optimizer, chunks, task, mode, settings.precision)
            optimizer.step()  # AdamW on the clipped, noised mean gradient in .grad
            if loss is not None:
                losses.append(loss)
            seen += len(chosen)
        dp_optimizer.zero_grad(set_to_none=True)
    model.eval()
    return TrainResult(
        loss=sum(losses) / len(losses) if losses else 0.0,  # every batch empty: noise only
        steps=settings.local_steps,
        examples_seen=seen,
        seconds=time.perf_counter() - start,
        peak_memory_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
