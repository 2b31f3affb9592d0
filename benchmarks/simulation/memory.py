"""The memory planner's estimate against the measured peak of real training steps.

Models (SmolLM2-135M, MiniLM-L6, the tiny presets), modes (LoRA, LoRA under record-level DP,
zeroth-order), batches and lengths; each measured in a fresh process (``client.memory_measure``)
twice: with an allocator that returns freed blocks at once (glibc with a fixed mmap threshold: the
tensors' own peak, what the estimate models) and with glibc's default. Writes ``memory.json``
and ``memory.png``.

    PYTHONPATH=. python -m benchmarks.simulation.memory
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save
from client.memory_measure import measure
from federated.config import parse_run_config
from federated.devices.memory_estimate import estimate_memory

HERE = Path(__file__).resolve().parent
LM, CLASSIFIER = {"model.name": "smollm2-135m"}, {"data.name": "wordnet", "data.num-classes": 8}
ZO = {"mode": "zo", "strategy.name": "fedkseed"}
DP = {"dp.mode": "record", "dp.noise-multiplier": 1.0}
CASES = [
    ({"model.name": "tiny-llama"}, 8, 96),
    ({"model.name": "tiny-llama"}, 16, 128),
    ({"model.name": "tiny-llama", **ZO}, 8, 96),
    ({"model.name": "tiny-llama", **DP}, 8, 96),
    ({"model.name": "tiny-bert", **CLASSIFIER}, 16, 64),
    ({"model.name": "tiny-bert", **CLASSIFIER}, 32, 128),
    ({"model.name": "minilm-l6", **CLASSIFIER}, 16, 64),
    ({"model.name": "minilm-l6", **CLASSIFIER}, 32, 128),
    ({"model.name": "minilm-l6", **CLASSIFIER, **ZO}, 16, 64),
    ({"model.name": "minilm-l6", **CLASSIFIER, **DP}, 16, 64),
    (LM, 4, 96),
    (LM, 8, 64),
    (LM, 8, 128),
    ({**LM, **ZO}, 4, 96),
    ({**LM, **ZO}, 8, 128),
    ({**LM, **DP}, 4, 96),
]


def label(config: dict, batch: int, length: int) -> str:
    mode = "zo" if config.get("mode") == "zo" else "dp" if config.get("dp.mode") == "record" else "lora"
    return f"{config['model.name']} {mode} {batch}x{length}"


def run() -> list[dict]:
    rows = []
    for config, batch, length in CASES:
        parsed = parse_run_config(config)
        estimate = estimate_memory(parsed, batch, length, parsed.lora.rank)
        returning = measure(config, batch, length)
        default = measure(config, batch, length, returning_allocator=False)
        row = {
            "case": label(config, batch, length),
            "config": config,
            "batch": batch,
            "length": length,
            "estimate": vars(estimate) | {"job": estimate.job},
            "measured_job": returning["peak"] - returning["runtime"],
            "measured_job_default_allocator": default["peak"] - default["runtime"],
            "runtime": returning["runtime"],
        }
        row["error"] = row["estimate"]["job"] / row["measured_job"] - 1
        row["error_default_allocator"] = (
            row["estimate"]["job"] / row["measured_job_default_allocator"] - 1
        )
        print(
            f"{row['case']}: estimate {estimate.job / 1e6:.0f} MB, measured "
            f"{row['measured_job'] / 1e6:.0f} MB ({row['error']:+.1%}), default allocator "
            f"{row['measured_job_default_allocator'] / 1e6:.0f} MB",
            flush=True,
        )
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    measured = [r["measured_job"] / 1e6 for r in rows]
    default = [r["measured_job_default_allocator"] / 1e6 for r in rows]
    estimated = [r["estimate"]["job"] / 1e6 for r in rows]
    ax.scatter(measured, estimated, label="allocator returning freed blocks")
    ax.scatter(default, estimated, marker="x", label="glibc default allocator")
    top = max(measured + default + estimated) * 1.1
    ax.plot([0, top], [0, top], color="gray", lw=0.8)
    ax.fill_between(
        [0, top], [0, 0.8 * top], [0, 1.2 * top], color="gray", alpha=0.15, label="within 20%"
    )
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel("measured job memory (MB, runtime excluded)")
    ax.set_ylabel("estimated job memory (MB)")
    ax.set_title("Memory planner: estimate against measured peak")
    ax.legend()
    save(fig, path)


def main() -> None:
    rows = run()
    (HERE / "memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, HERE / "memory.png")


if __name__ == "__main__":
    main()
