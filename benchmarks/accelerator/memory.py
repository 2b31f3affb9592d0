"""The planner's memory estimate against the GPU memory of one real LoRA training round.

For each model size and numerics, ``fedtune plan``'s estimate (``Job.estimate``, on torch's meta
device) beside what ``torch.cuda.max_memory_allocated`` saw while fedtune's own ``train_lora``
took two steps (forward, backward, AdamW on the LoRA weights) on that model with random weights.
The second step is the one the planner sums: its forward runs while the first step's gradients
and AdamW's moments are held.

Like with like: the allocator counts tensors, so the measured peak is compared with the
estimate's tensors (weights, gradients and AdamW moments, saved activations, the step's
transients), without what the planner adds for a process (``JOB_OVERHEAD_BYTES``), its headroom
or the CUDA context (``CUDA_CONTEXT_BYTES``), which no allocator sees. The plan a device is
promised (``Device.need``: tensors, overhead, headroom, context) is set against the allocator's
reserved peak plus the context measured beside it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator

import torch

from benchmarks.accelerator.models import build, random_examples, run_config
from client.lora_trainer import train_lora
from federated.config import TrainSettings
from federated.devices.job_plan import Device, Job
from federated.model.numerics import Numerics

# FlowerTune trains 16 sequences of 512 tokens a step; 4 keep every job of the 8B model within
# an H100 without checkpointing and the whole measurement within minutes.
BATCH, LENGTH = 4, 512
QUANTIZATIONS = ("none", "4bit")
GPU = Device("GPU", 80e9, gpu=True)


def numerics_of(quantization: str) -> list[Numerics]:
    """bf16 compute, without and then with gradient checkpointing."""
    return [Numerics("bf16", quantization, checkpointing) for checkpointing in (False, True)]


def estimate_row(model: str, numerics: Numerics, batch: int, length: int) -> dict:
    """The planner's estimate of one job, by part; "tensors" is what an allocator holds at its
    peak: the estimate less the process's overhead."""
    config = run_config(model, batch, length, numerics)
    estimate = Job(config, batch, length, numerics).estimate()
    return {
        "model": model,
        "quantization": numerics.quantization,
        "gradient_checkpointing": numerics.gradient_checkpointing,
        "batch": batch,
        "length": length,
        "estimate_weights_gb": estimate.weights / 1e9,
        "estimate_optimizer_gb": estimate.optimizer / 1e9,
        "estimate_activations_gb": estimate.activations / 1e9,
        "estimate_transient_gb": estimate.transient / 1e9,
        "estimate_tensors_gb": (estimate.counted - estimate.overhead) / 1e9,
        "planned_gb": GPU.need(estimate) / 1e9,
    }


def measure_round(
    model: torch.nn.Module, numerics: Numerics, batch: int, length: int, device: torch.device
) -> dict:
    """Two ``train_lora`` steps on random tokens, in ``numerics``' precision (a run's autocast);
    on a GPU, the allocator's counts around them."""
    vocab = model.get_input_embeddings().num_embeddings
    encoded = random_examples(2 * batch, length, vocab, torch.Generator().manual_seed(0))
    settings = TrainSettings(local_steps=2, lr=1e-4, batch_size=batch, precision=numerics.precision)
    cuda = device.type == "cuda"
    if cuda:  # the cache emptied, so that the reserved peak is this round's own
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    held = torch.cuda.memory_allocated(device) if cuda else None
    result = train_lora(
        model,
        encoded,
        "causal-lm",
        settings,
        pad_token_id=0,
        generator=torch.Generator().manual_seed(0),
    )
    measured = {"seconds_per_step": result.seconds / result.steps, "loss": result.loss}
    if cuda:
        measured.update(
            held_before_gb=held / 1e9,
            peak_allocated_gb=torch.cuda.max_memory_allocated(device) / 1e9,
            peak_reserved_gb=torch.cuda.max_memory_reserved(device) / 1e9,
        )
    return measured


def compare(row: dict, measured: dict, context_gb: float | None) -> dict:
    """The measured round beside its estimate: ratios, and whether the plan covered it."""
    row = {**row, **measured}
    if "peak_allocated_gb" in measured:
        row["measured_over_estimate"] = measured["peak_allocated_gb"] / row["estimate_tensors_gb"]
        row["within_10_percent"] = abs(row["measured_over_estimate"] - 1) <= 0.10
        row["weights_measured_over_estimate"] = (
            measured["held_before_gb"] / row["estimate_weights_gb"]
        )
        if context_gb is not None:
            row["outside_allocator_gb"] = context_gb
            row["plan_covers_reserved_and_context"] = (
                row["planned_gb"] >= measured["peak_reserved_gb"] + context_gb
            )
    return row


def memory_rows(
    sizes: tuple[str, ...],
    measured_sizes: tuple[str, ...],
    device: torch.device,
    unmeasured: dict[str, str],
    deadline: float,
    context_gb: Callable[[], float | None],
    batch: int = BATCH,
    length: int = LENGTH,
) -> Iterator[dict]:
    """An estimate row for every size and numerics; for ``measured_sizes`` the round measured on
    ``device`` too (a model built for each row), but for the quantizations ``unmeasured`` gives a
    reason for, and until ``deadline`` (``time.monotonic``) has passed."""
    for model in sizes:
        for quantization in QUANTIZATIONS:
            for numerics in numerics_of(quantization):
                row = estimate_row(model, numerics, batch, length)
                if model not in measured_sizes:
                    yield row
                elif quantization in unmeasured:
                    yield {**row, "skipped": unmeasured[quantization]}
                elif time.monotonic() > deadline:
                    yield {**row, "skipped": "past the time budget"}
                else:
                    yield _measured(model, numerics, row, device, context_gb, batch, length)


def _measured(
    model_name: str,
    numerics: Numerics,
    row: dict,
    device: torch.device,
    context_gb: Callable[[], float | None],
    batch: int,
    length: int,
) -> dict:
    # A failure (out of memory, a library missing) is that row's result, not the run's end.
    model = None
    try:
        model = build(run_config(model_name, batch, length, numerics), numerics, device)
        measured = measure_round(model, numerics, batch, length, device)
        return compare(row, measured, context_gb())
    except Exception as err:
        return {**row, "error": describe(err)}
    finally:
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def describe(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
