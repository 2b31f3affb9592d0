"""What the cost benchmarks share: the models and batches they time, and peak-memory readings.

Peak memory is the kernel's high-water mark of the process's resident set (VmHWM), reset with
``/proc/self/clear_refs`` after the model has loaded, so that it covers the measured phase alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from federated.config import RunConfig, parse_run_config
from federated.data.encode import batches
from federated.model.workspace import client_indices, encode_indices

# Per model: its task's data, and the batch a client steps on (as in the federated runs).
MODELS = {
    "smollm2-135m": {
        "config": {"model.name": "smollm2-135m", "data.name": "chatterbot"},
        "batch_size": 4,
    },
    "minilm-l6": {
        "config": {
            "model.name": "minilm-l6",
            "model.max-length": 32,
            "data.name": "wordnet",
            "data.num-classes": 8,
            "data.max-per-class": 400,
            "data.partitioner": "iid",
        },
        "batch_size": 16,
    },
}


def peak_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def model_config(model: str, zo: tuple[str, str] | None = None) -> RunConfig:
    """The model's benchmark config; with ``zo`` (params, perturbation), as a FedKSeed client."""
    raw = dict(MODELS[model]["config"])
    if zo is not None:
        raw |= {"mode": "zo", "strategy.name": "fedkseed"}
        raw |= {"zo.params": zo[0], "zo.perturbation": zo[1]}
    return parse_run_config(raw)


def first_batch(config: RunConfig, tokenizer: Any, batch_size: int) -> tuple[list[dict], dict]:
    """The first ``batch_size`` training examples of client 0, encoded and as one batch."""
    train_ids, _ = client_indices(config, 0, 10)
    encoded = encode_indices(config, tokenizer, train_ids[:batch_size])
    generator = torch.Generator().manual_seed(0)
    batch = next(
        batches(encoded, batch_size, generator=generator, pad_token_id=tokenizer.pad_token_id)
    )
    return encoded, batch
