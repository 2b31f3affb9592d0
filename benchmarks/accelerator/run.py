"""What fedtune does on a GPU, measured in one short run: the planner's memory estimate against
the allocator's peak of real LoRA rounds (``memory``), each trainer's step on the GPU against the
CPU (``step_time``), and whether seed replay rebuilds the same weights on both (``replay_check``).

On a machine without CUDA (or with ``--dry-run``) it runs what a CPU can: every planner estimate,
the measured rounds of a tiny Llama on the CPU (no allocator peak there: the round runs so that
the code cannot rot), the CPU step times, and replay CPU against CPU. Results go to
``<out>/gpu.json`` and ``gpu.png``, or ``dry_run.json`` and ``dry_run.png``; the JSON is written
after every row, so a run stopped at its time limit still leaves what it measured.

    PYTHONPATH=. python -m benchmarks.accelerator.run --dry-run --threads 1
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from benchmarks.accelerator.memory import BATCH, LENGTH, describe, memory_rows
from benchmarks.accelerator.models import SIZES, SMALL, TINY
from benchmarks.accelerator.replay_check import replay_rows
from benchmarks.accelerator.report import plot
from benchmarks.accelerator.step_time import BATCH as STEP_BATCH
from benchmarks.accelerator.step_time import LENGTH as STEP_LENGTH
from benchmarks.accelerator.step_time import step_rows
from federated.devices.job_plan import CUDA_CONTEXT_BYTES
from federated.model.numerics_loading import bitsandbytes

HERE = Path(__file__).resolve().parent
PACKAGES = ("torch", "transformers", "peft", "opacus", "bitsandbytes", "numpy")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _commit() -> str | None:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    return found.stdout.strip() or None


def environment(device: torch.device) -> dict:
    found = {
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "commit": _commit(),
        "cpu_threads": torch.get_num_threads(),
        "device": device.type,
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        found.update(
            gpu=properties.name,
            gpu_memory_gb=properties.total_memory / 1e9,
            capability=".".join(map(str, torch.cuda.get_device_capability(device))),
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    return found


def outside_allocator_gb(device: torch.device) -> float | None:
    """GPU memory in use that torch's allocator did not reserve: the CUDA context, the libraries'
    modules and handles (what ``CUDA_CONTEXT_BYTES`` plans for); None off a GPU."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return (total - free - torch.cuda.memory_reserved(device)) / 1e9


def _settings(dry: bool, quick: bool) -> dict:
    """What each part runs: the GPU run's full set, the dry run's CPU share, or the quick test's."""
    if quick:
        return {
            "sizes": (TINY,),
            "measured_sizes": (TINY,),
            "batch": 2,
            "length": 16,
            "step_models": (TINY,),
            "step_batch": 2,
            "step_length": 16,
            "steps": 1,
            "replay_cases": ((TINY, "lora", 8),),
        }
    return {
        "sizes": (*SIZES, TINY) if dry else SIZES,
        "measured_sizes": (TINY,) if dry else SIZES,
        "batch": BATCH,
        "length": LENGTH,
        "step_models": (TINY,) if dry else (TINY, SMALL),
        "step_batch": STEP_BATCH,
        "step_length": STEP_LENGTH,
        "steps": 3 if dry else 10,
        "replay_cases": ((TINY, "lora", 64), (TINY, "full", 16))
        + (() if dry else ((SMALL, "lora", 64),)),
    }


def _unmeasured() -> dict[str, str]:
    try:
        bitsandbytes()
    except (ImportError, ValueError) as err:
        return {"4bit": f"bitsandbytes does not import: {err}"}
    return {}


class Results:
    """The run's JSON, rewritten after every row."""

    def __init__(self, path: Path, head: dict) -> None:
        self.path, self.data = path, {**head, "errors": {}}

    def collect(self, part: str, rows: Iterable[dict]) -> None:
        self.data[part] = []
        try:
            for row in rows:
                self.data[part].append(row)
                print(json.dumps(row), flush=True)
                self.write()
        except Exception as err:  # a part that breaks leaves the others to run
            self.data["errors"][part] = describe(err)
            print(f"{part}: {self.data['errors'][part]}", flush=True)
        self.write()

    def write(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the JSON and PNG")
    parser.add_argument("--dry-run", action="store_true", help="the CPU share (forced off CUDA)")
    parser.add_argument("--quick", action="store_true", help="the dry run's smallest share")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=300.0,
        help="seconds after which no new model is measured (default 300)",
    )
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.monotonic()
    dry = args.dry_run or args.quick or not torch.cuda.is_available()
    device = torch.device("cpu" if dry else "cuda")
    if device.type == "cuda":  # the context and cuBLAS loaded before the first reading
        torch.ones(8, 8, device=device).matmul(torch.ones(8, 8, device=device))
    settings = _settings(dry, args.quick)
    name = "dry_run" if dry else "gpu"
    args.out.mkdir(parents=True, exist_ok=True)
    results = Results(
        args.out / f"{name}.json",
        {
            "mode": name,
            "settings": {**settings, "budget_s": args.budget_s},
            "environment": environment(device),
            "cuda_context_gb": {
                "planner_constant": CUDA_CONTEXT_BYTES / 1e9,
                "measured_at_start": outside_allocator_gb(device),
            },
        },
    )
    results.collect("replay", replay_rows(settings["replay_cases"], device))
    devices = (torch.device("cpu"),) if dry else (torch.device("cpu"), device)
    results.collect(
        "step_time",
        step_rows(
            settings["step_models"],
            devices,
            settings["steps"],
            settings["step_batch"],
            settings["step_length"],
        ),
    )
    results.collect(
        "memory",
        memory_rows(
            settings["sizes"],
            settings["measured_sizes"],
            device,
            _unmeasured(),
            start + args.budget_s,
            lambda: outside_allocator_gb(device),
            settings["batch"],
            settings["length"],
        ),
    )
    results.data["cuda_context_gb"]["measured_at_end"] = outside_allocator_gb(device)
    results.data["seconds"] = time.monotonic() - start
    results.write()
    plot(results.data, args.out / f"{name}.png")
    return results.data


if __name__ == "__main__":
    main(sys.argv[1:])
