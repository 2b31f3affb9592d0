"""``fedtune plan``'s estimate for 3-8B models at FlowerTune LLM's settings, beside the per-client
GPU memory FlowerTune publishes for them.

FlowerTune LLM's template trains LoRA rank 32 (alpha 64, dropout 0.075) on peft's default
targets for these architectures (q_proj, v_proj), sequences of 512 tokens, 16 a step, bf16
compute, gradient checkpointing, the base weights in 4 or 8 bits; it publishes about 16.5 GB a
client for a 7B model in 4 bits, 22 GB in 8 bits and 10.6 GB for a 3B model in 4 bits. The
models' configs are in ``configs/`` (no weights: the estimate runs on torch's meta device).
Writes ``flowertune.json`` and ``flowertune.png``.

    PYTHONPATH=. python -m benchmarks.planner.flowertune
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save
from federated.config import parse_run_config
from federated.devices.job_plan import CUDA_CONTEXT_BYTES, Device, Job
from federated.model.numerics import Numerics

HERE = Path(__file__).resolve().parent
MODELS = ("mistral-7b-v0.3", "llama-3-8b", "qwen2.5-7b", "qwen2.5-3b")
RANK, BATCH, LENGTH = 32, 16, 512
PUBLISHED_GB = {("mistral-7b-v0.3", "4bit"): 16.5, ("mistral-7b-v0.3", "8bit"): 22.0}
PUBLISHED_3B_GB = 10.6  # FlowerTune's figure for a 3B model in 4 bits
GPU = Device("GPU", 80e9, gpu=True)


def _job(model: str, quantization: str, checkpointing: bool = True) -> Job:
    config = parse_run_config(
        {
            "model.name": str(HERE / "configs" / f"{model}.json"),
            "model.task": "causal-lm",
            "model.max-length": LENGTH,
            "lora.rank": RANK,
            "lora.alpha": 64.0,
            "lora.dropout": 0.075,
            "lora.target-modules": "q_proj,v_proj",
            "train.batch-size": BATCH,
        }
    )
    return Job(config, BATCH, LENGTH, Numerics("bf16", quantization, checkpointing))


def main() -> None:
    rows = []
    for model in MODELS:
        for quantization, checkpointing in (("4bit", True), ("8bit", True), ("4bit", False)):
            estimate = _job(model, quantization, checkpointing).estimate()
            published = PUBLISHED_GB.get((model, quantization)) if checkpointing else None
            if model == "qwen2.5-3b" and quantization == "4bit" and checkpointing:
                published = PUBLISHED_3B_GB
            rows.append(
                {
                    "model": model,
                    "quantization": quantization,
                    "gradient_checkpointing": checkpointing,
                    "weights_gb": estimate.weights / 1e9,
                    "activations_gb": estimate.activations / 1e9,
                    "tensors_gb": estimate.counted / 1e9,
                    "planned_gb": GPU.need(estimate) / 1e9,
                    "published_gb": published,
                }
            )
            print(json.dumps(rows[-1]))
    result = {
        "settings": {"rank": RANK, "batch": BATCH, "length": LENGTH, "precision": "bf16"},
        "cuda_context_gb": CUDA_CONTEXT_BYTES / 1e9,
        "rows": rows,
    }
    (HERE / "flowertune.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(rows)


def _plot(rows: list[dict]) -> None:
    shown = [r for r in rows if r["gradient_checkpointing"]]
    labels = [f"{r['model']}\n{r['quantization']}" for r in shown]
    fig, ax = plt.subplots(figsize=(10, 4))
    x = range(len(shown))
    ax.bar([i - 0.2 for i in x], [r["planned_gb"] for r in shown], 0.4, label="fedtune plan")
    published = [(i, r["published_gb"]) for i, r in enumerate(shown) if r["published_gb"]]
    ax.bar(
        [i + 0.2 for i, _ in published],
        [gb for _, gb in published],
        0.4,
        label="FlowerTune LLM, published",
    )
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("GPU memory a client, GB")
    ax.set_title(f"LoRA rank {RANK}, batch {BATCH} x {LENGTH}, bf16, gradient checkpointing")
    ax.legend()
    save(fig, HERE / "flowertune.png")


if __name__ == "__main__":
    main()
