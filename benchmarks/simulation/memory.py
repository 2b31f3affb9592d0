"""The memory planner's estimate against the measured peak of real training steps.

Models (SmolLM2-135M, MiniLM-L6, the tiny presets), modes (LoRA, LoRA under record-level DP,
zeroth-order), batches and lengths; each measured in a fresh process (``client.memory_measure``)
in the environment a node has by default: no ``MALLOC_*`` variable, the allocator as the
ClientApp sets it (``federated.devices.allocator``). The estimate is the planner's whole
promise, the runtime measured on this machine included; it must not fall below the peak.
Writes ``memory.json`` and ``memory.png``.

    PYTHONPATH=. python -m benchmarks.simulation.memory
"""

from __future__ import annotations

import json
import os
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
    ({**LM, "lora.rank": 16}, 2, 256),
]


def label(config: dict, batch: int, length: int) -> str:
    mode = (
        "zo"
        if config.get("mode") == "zo"
        else "dp"
        if config.get("dp.mode") == "record"
        else "lora"
    )
    rank = f" r{config['lora.rank']}" if "lora.rank" in config else ""
    return f"{config['model.name']} {mode}{rank} {batch}x{length}"


def default_environment() -> None:
    """Measure as a node runs by default: no allocator settings from whoever started this."""
    for key in [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
        del os.environ[key]


def run() -> list[dict]:
    rows = []
    for config, batch, length in CASES:
        parsed = parse_run_config(config)
        estimate = estimate_memory(parsed, batch, length, parsed.lora.rank)
        measured = measure(config, batch, length)
        row = {
            "case": label(config, batch, length),
            "config": config,
            "batch": batch,
            "length": length,
            "estimate": vars(estimate)
            | {"headroom": estimate.headroom, "job": estimate.job, "total": estimate.total},
            "measured": measured,
            "estimate_over_peak": estimate.total / measured["peak"],
        }
        print(
            f"{row['case']}: estimate {estimate.total / 1e6:.0f} MB, measured peak "
            f"{measured['peak'] / 1e6:.0f} MB ({row['estimate_over_peak']:.3f}x), runtime "
            f"{estimate.runtime / 1e6:.0f} MB estimated, {measured['runtime'] / 1e6:.0f} measured",
            flush=True,
        )
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    measured = [r["measured"]["peak"] / 1e6 for r in rows]
    estimated = [r["estimate"]["total"] / 1e6 for r in rows]
    ax.scatter(measured, estimated, label="one case")
    low, top = min(measured + estimated) * 0.9, max(measured + estimated) * 1.1
    ax.plot([low, top], [low, top], color="gray", lw=0.8, label="estimate = peak")
    ax.fill_between(
        [low, top],
        [low, top],
        [1.2 * low, 1.2 * top],
        color="gray",
        alpha=0.15,
        label="up to 20% above",
    )
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlim(low, top), ax.set_ylim(low, top * 1.2)
    ax.set_xlabel("measured peak (MB, runtime included, default environment)")
    ax.set_ylabel("planner's estimate (MB)")
    ax.set_title("Memory planner: estimate against measured peak")
    ax.legend()
    save(fig, path)


def main() -> None:
    default_environment()
    rows = run()
    (HERE / "memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, HERE / "memory.png")


if __name__ == "__main__":
    main()
