"""Seconds a step of each fedtune trainer takes on a device: first-order LoRA (``train_lora``),
record-level DP-SGD (``train_lora_dp``, opacus's per-sample hooks) and zeroth-order steps on the
LoRA factors (``train_zo``, dense and low-rank perturbations), for the same model on the CPU and
on the GPU.

The model is built in float32 on the CPU, as a client builds it, and moved with ``.to(device)``;
the trainers move each batch to the model's device (``train.device``). A first call of one step
warms the device (kernels, allocator) and is not counted; the second call's own clock
(``seconds`` of its result, read after each step's loss reaches the host) is divided by its steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from benchmarks.accelerator.memory import describe
from benchmarks.accelerator.models import build, random_examples, run_config
from client.dp_lora_trainer import train_lora_dp
from client.lora_trainer import train_lora
from federated.config import TrainSettings
from federated.model.numerics import PLAIN_FP32
from federated.privacy.secret_randomness import secret_generator
from federated.zo.seed_pool import SeedPool
from federated.zo.targets import zo_targets
from federated.zo.trainer import train_zo

BATCH, LENGTH = 8, 128
POOL = 64  # FedKSeed's pool of candidate seeds
TRAINERS = ("lora", "dp-sgd", "zo-dense", "zo-low-rank")


def _lora(model: torch.nn.Module, encoded: list, steps: int, batch: int) -> float:
    settings = TrainSettings(local_steps=steps, lr=1e-4, batch_size=batch)
    generator = torch.Generator().manual_seed(0)
    result = train_lora(model, encoded, "causal-lm", settings, pad_token_id=0, generator=generator)
    return result.seconds / result.steps


def _dp(model: torch.nn.Module, encoded: list, steps: int, batch: int) -> float:
    settings = TrainSettings(local_steps=steps, lr=1e-4, batch_size=batch)
    result = train_lora_dp(
        model,
        encoded,
        "causal-lm",
        settings,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        sample_rate=batch / len(encoded),
        expected_batch=batch,
        mode="hooks",
        pad_token_id=0,
        generator=secret_generator("benchmarks.accelerator"),  # as a client draws its noise
    )
    return result.seconds / result.steps


def _zo(structure: str) -> Callable[[torch.nn.Module, list, int, int], float]:
    def step(model: torch.nn.Module, encoded: list, steps: int, batch: int) -> float:
        result = train_zo(
            model,
            zo_targets(model, "lora"),
            SeedPool.from_run_seed(0, POOL),
            encoded,
            "causal-lm",
            steps=steps,
            lr=1e-4,
            eps=1e-3,
            batch_size=batch,
            structure=structure,
            pad_token_id=0,
            generator=torch.Generator().manual_seed(0),
        )
        return result.seconds / result.steps

    return step


STEPS = dict(
    zip(TRAINERS, (_lora, _dp, _zo("dense"), _zo("low-rank")), strict=True),
)


def step_rows(
    models: tuple[str, ...],
    devices: tuple[torch.device, ...],
    steps: int,
    batch: int = BATCH,
    length: int = LENGTH,
) -> Iterator[dict]:
    """One row per model, trainer and device: seconds per step, or the error that stopped it."""
    for name in models:
        config = run_config(name, batch, length)
        for device in devices:
            model = build(config, PLAIN_FP32, torch.device("cpu")).to(device)
            vocab = model.get_input_embeddings().num_embeddings
            encoded = random_examples(4 * batch, length, vocab, torch.Generator().manual_seed(1))
            for trainer, step in STEPS.items():
                row = {
                    "model": name,
                    "trainer": trainer,
                    "device": device.type,
                    "batch": batch,
                    "length": length,
                    "steps": steps,
                }
                try:
                    step(model, encoded, 1, batch)  # warm-up, not counted
                    row["seconds_per_step"] = step(model, encoded, steps, batch)
                except Exception as err:  # reported, and the other trainers still run
                    row["error"] = describe(err)
                yield row
            del model
