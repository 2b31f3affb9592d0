"""What zeroth-order, seed-based training trades: bytes and learning against LoRA FedAvg.

Each model runs LoRA FedAvg and FedKSeed variants through ``flwr run`` on Flower's simulation
engine with the same clients, data split, rounds and seed. Every finished run is kept under
``runs/`` and skipped when the script runs again.

    python -m benchmarks.zo.run       # the federated runs, then runs.json
    python -m benchmarks.zo.costs     # step time, memory and replay time, costs.json
    python -m benchmarks.zo.report    # plots and tables
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.flower_runs import per_client, run_all

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
RESULTS = HERE / "runs.json"

# Shared by every run of a model: data, clients, sampling, rounds, evaluation.
MODELS = {
    "smollm2-135m": {
        "clients": 10,
        "run_config": {
            "model.name": "smollm2-135m",
            "data.name": "chatterbot",
            "num-server-rounds": 4,
            "strategy.fraction-train": 0.3,
            "strategy.min-train-nodes": 3,
            "strategy.fraction-evaluate": 0.0,
            "strategy.min-available-nodes": 10,
            "eval.max-examples": 64,
            "train.batch-size": 4,
            "seed": 0,
        },
    },
    "minilm-l6": {
        "clients": 20,
        "run_config": {
            "model.name": "minilm-l6",
            "model.max-length": 32,
            "data.name": "wordnet",
            "data.num-classes": 8,
            "data.max-per-class": 400,
            "data.partitioner": "dirichlet",
            "data.dirichlet-alpha": 1.0,
            "data.test-fraction": 0.1,
            "num-server-rounds": 8,
            "strategy.fraction-train": 0.25,
            "strategy.min-train-nodes": 5,
            "strategy.fraction-evaluate": 0.0,
            "strategy.min-available-nodes": 20,
            "eval.max-examples": 0,
            "eval.batch-size": 64,
            "train.batch-size": 16,
            "seed": 0,
        },
    },
}

_ZO = {"mode": "zo", "strategy.name": "fedkseed", "zo.pool-size": 4096, "zo.eps": 1e-3}

# Per model, the compared methods. A ZO step costs two forward passes and no backward, so ZO
# clients take more, cheaper steps. Each zo.lr is the largest of lr_sweep.py's grid (steps of
# about 3x) that did not diverge; the next one up blew the loss up within a few hundred steps.
# Dense full-parameter perturbations run last: their replays make that run the longest.
METHODS = {
    "smollm2-135m": {
        "lora-fedavg": {"strategy.name": "fedavg", "train.local-steps": 10, "train.lr": 1e-3},
        "zo-full-low-rank": {
            **_ZO,
            "zo.params": "full",
            "zo.perturbation": "low-rank",
            "zo.lr": 1e-5,
            "train.local-steps": 20,
        },
        "zo-lora-dense": {
            **_ZO,
            "zo.params": "lora",
            "zo.perturbation": "dense",
            "zo.lr": 3e-4,
            "train.local-steps": 20,
        },
    },
    "minilm-l6": {
        "lora-fedavg": {"strategy.name": "fedavg", "train.local-steps": 8, "train.lr": 3e-3},
        "zo-full-low-rank": {
            **_ZO,
            "zo.params": "full",
            "zo.perturbation": "low-rank",
            "zo.lr": 3e-4,
            "train.local-steps": 40,
        },
        "zo-lora-dense": {
            **_ZO,
            "zo.params": "lora",
            "zo.perturbation": "dense",
            "zo.lr": 3e-3,
            "train.local-steps": 40,
        },
        # The first 4 of the 8 rounds: a sampled client replays every seed moved since it last
        # synced, about 0.3 s each with dense perturbations of all weights, so rounds grow; 8
        # rounds took 46 minutes, more than the rest of the benchmark together.
        "zo-full-dense": {
            **_ZO,
            "zo.params": "full",
            "zo.perturbation": "dense",
            "zo.lr": 3e-4,
            "train.local-steps": 40,
            "num-server-rounds": 4,
        },
    },
}


def summarise(rounds: list[dict], clients: int) -> dict:
    """Curves and per-client bytes of one run; totals per client over the whole run."""
    up, down = per_client(rounds, "bytes_up"), per_client(rounds, "bytes_down")
    total_up = sum(r["bytes_up"] for r in rounds[1:]) / clients
    total_down = sum(r["bytes_down"] for r in rounds[1:]) / clients
    return {
        "test_loss": [r["test_loss"] for r in rounds],
        "test_accuracy": [r.get("test_accuracy") for r in rounds],
        "bytes_up_per_client": up,
        "bytes_down_per_client": down,
        "total_bytes_per_client": total_up + total_down,
        "round_seconds": [r["round_seconds"] for r in rounds[1:]],
    }


def main() -> None:
    torch.set_num_threads(1)
    planned = {
        f"{model}-{method}": ({**shared["run_config"], **overrides}, shared["clients"])
        for model, shared in MODELS.items()
        for method, overrides in METHODS[model].items()
    }
    done = run_all("zo-bench", RUNS, planned, lambda r: f"test loss {r[-1]['test_loss']:.3f}")
    results: dict = {"settings": {"models": MODELS, "methods": METHODS}, "runs": {}}
    for model, shared in MODELS.items():
        results["runs"][model] = {
            method: summarise(done[f"{model}-{method}"], shared["clients"])
            for method in METHODS[model]
        }
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
