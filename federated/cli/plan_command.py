"""``fedtune plan``: will a model's LoRA (or zeroth-order) training fit a device, from the
model's config alone, and what to change when it does not."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from federated.numeric_names import PRECISIONS, QUANTIZATIONS

if TYPE_CHECKING:  # the parser is built for every fedtune command; torch loads for plan alone
    from federated.devices.job_plan import Device, Job, JobPlan


def add_arguments(plan: argparse.ArgumentParser) -> None:
    plan.add_argument(
        "model",
        help="a preset, a hub id in the local cache, a folder with config.json, or a "
        "config.json file: no weights are read",
    )
    plan.add_argument("--task", default="auto", help="causal-lm, classification or auto")
    plan.add_argument(
        "--labels", type=int, default=2, help="classes, for classification (2 to 45; default 2)"
    )
    plan.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    plan.add_argument(
        "--targets",
        default="auto",
        help="LoRA target modules, comma-separated, or all-linear (default auto: chosen by "
        "architecture, as lora.target-modules=auto is in training)",
    )
    plan.add_argument("--batch", type=int, default=8, help="sequences a step (default 8)")
    plan.add_argument("--length", type=int, default=256, help="tokens a sequence (default 256)")
    plan.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32")
    plan.add_argument("--quantization", choices=QUANTIZATIONS, default="none")
    plan.add_argument("--gradient-checkpointing", action="store_true")
    plan.add_argument("--dp-sgd", action="store_true", help="record-level DP (opacus)")
    plan.add_argument("--zeroth-order", action="store_true", help="seed-based steps, no backward")
    where = plan.add_mutually_exclusive_group(required=True)
    where.add_argument("--gpu-gb", type=float, help="a GPU with this much memory")
    where.add_argument("--memory-gb", type=float, help="a CPU device with this much RAM")
    where.add_argument("--device", help="a device profile (fedtune's presets, or --profiles)")
    plan.add_argument("--profiles", type=Path, help="a TOML file of device profiles")


def _device(args: argparse.Namespace) -> Device:
    from federated.devices.job_plan import Device
    from federated.devices.profiles import load_profiles

    if args.gpu_gb is not None:
        return Device(f"a {args.gpu_gb:g} GB GPU", args.gpu_gb * 1e9, gpu=True)
    if args.memory_gb is not None:
        return Device(f"{args.memory_gb:g} GB of RAM", args.memory_gb * 1e9, gpu=False)
    profiles = load_profiles(args.profiles)
    if args.device not in profiles:
        raise ValueError(f"device {args.device!r}: the profiles are {', '.join(profiles)}")
    profile = profiles[args.device]
    return Device(
        f"{profile.name} ({profile.memory_bytes / 1e9:g} GB)", profile.memory_bytes, False
    )


def _job(args: argparse.Namespace, source: str) -> Job:
    from federated.config import parse_run_config
    from federated.devices.job_plan import Job
    from federated.model.numerics import Numerics
    from federated.model.presets import PRESETS
    from federated.tasks import TASK_CLASSIFICATION

    flat = {
        "model.name": source,
        "model.task": args.task,
        "model.max-length": args.length,
        "lora.rank": args.rank,
        "lora.target-modules": args.targets,
        "train.batch-size": args.batch,
    }
    if args.zeroth_order:
        flat.update({"mode": "zo", "strategy.name": "fedkseed", "zo.params": "lora"})
    if args.dp_sgd:
        flat.update({"dp.mode": "record", "dp.noise-multiplier": 1.0})
    preset = PRESETS.get(args.model)
    task = preset.task if args.task == "auto" and preset else args.task
    if task == TASK_CLASSIFICATION:
        # The head's classes come from the data; the packaged WordNet classes stand in for the
        # user's (they change the head alone).
        flat.update({"data.name": "wordnet", "data.num-classes": args.labels})
    config = parse_run_config(flat)
    numerics = Numerics(args.precision, args.quantization, args.gradient_checkpointing)
    return Job(config, args.batch, args.length, numerics)


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _report(model: str, plan: JobPlan) -> str:
    from federated.devices.job_plan import CUDA_CONTEXT_BYTES
    from federated.devices.memory_estimate import skeleton
    from federated.model.lora import adapted_names

    job, estimate, device = plan.job, plan.estimate, plan.device
    skeleton_model = skeleton(job.config, job.rank)
    params = list(skeleton_model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    base = sum(p.numel() for p in params) - trainable
    arch = getattr(skeleton_model.config, "model_type", "?")
    lines = [
        f"{model}: {arch}, {base / 1e9:.2f} B parameters, {job.config.task}",
        f"job: {job.describe()}",
    ]
    if job.config.mode == "lora":
        targets = ", ".join(adapted_names(skeleton_model))
        lines.append(
            f"  trainable: {trainable / 1e6:.1f} M LoRA weights on {targets} "
            f"({trainable * 4 / 1e6:.1f} MB each way in float32)"
        )
    parts = [
        ("weights", estimate.weights),
        ("gradients, AdamW", estimate.optimizer),
        ("activations", estimate.activations),
        ("transient", estimate.transient),
        ("overhead", estimate.overhead),
        ("headroom", estimate.headroom),
        (
            "CUDA context" if device.gpu else "runtime",
            CUDA_CONTEXT_BYTES if device.gpu else estimate.runtime,
        ),
    ]
    lines += [f"  {name:<18}{_gb(value):>10}" for name, value in parts]
    verdict = (
        f"fits, {_gb(device.memory_bytes - plan.need)} to spare" if plan.fits else "does not fit"
    )
    lines.append(f"  {'peak':<18}{_gb(plan.need):>10}  on {device.name}: {verdict}")
    if not plan.fits:
        if plan.alternatives:
            lines.append("these fit:")
            lines += [f"  {what}: {_gb(device.need(e))}" for what, _, e in plan.alternatives]
        else:
            lines.append("no smaller job fits: a device with more memory, or a smaller model")
    return "\n".join(lines)


def plan_command(args: argparse.Namespace) -> tuple[str, bool]:
    """The plan's report, and whether the job fits."""
    from federated.config import ConfigError
    from federated.devices.job_plan import plan_job

    try:
        plan = plan_job(_job(args, args.model), _device(args))
    except ConfigError as err:
        raise ValueError(str(err)) from None
    return _report(args.model, plan), plan.fits
