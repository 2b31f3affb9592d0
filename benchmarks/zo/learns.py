"""What makes zeroth-order training learn: each option of issue 15 against LoRA FedAvg, at equal
client compute.

A ZO step costs two forward passes and no backward, a LoRA step a forward and a backward; each
ZO method takes as many steps as fit in the compute of the LoRA run's steps, by the step times
``costs.py`` measured (``costs.json``). Runs go through ``flwr run`` on Flower's simulation
engine with ``run.py``'s clients, data, rounds and seed, and are kept under ``runs/`` (a run
that ``run.py`` already made is not made again).

    python -m benchmarks.zo.learns        # the runs, then learns.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.flower_runs import run_all
from benchmarks.zo.run import MODELS, RUNS, summarise

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "learns.json"
COSTS = json.loads((HERE / "costs.json").read_text())

# run.py's two set-ups, and WordNet posed to SmolLM2 as generation (label words after a
# prompt) with MiniLM's clients, split and rounds; its steps are priced by SmolLM2's costs.
SETUPS = {
    **MODELS,
    "smollm2-wordnet": {
        "clients": MODELS["minilm-l6"]["clients"],
        "run_config": {
            **MODELS["minilm-l6"]["run_config"],
            "model.name": "smollm2-135m",
            "model.task": "classification-as-generation",
        },
    },
}
PRICED_AS = {
    "minilm-l6": "minilm-l6",
    "smollm2-135m": "smollm2-135m",
    "smollm2-wordnet": "smollm2-135m",
}

_ZO = {"mode": "zo", "strategy.name": "fedkseed", "zo.pool-size": 4096, "zo.eps": 1e-3}
LORA_STEPS = {"minilm-l6": 8, "smollm2-135m": 10, "smollm2-wordnet": 8}
LORA = {
    "minilm-l6": {"strategy.name": "fedavg", "train.local-steps": 8, "train.lr": 3e-3},
    "smollm2-135m": {"strategy.name": "fedavg", "train.local-steps": 10, "train.lr": 1e-3},
    "smollm2-wordnet": {"strategy.name": "fedavg", "train.local-steps": 8, "train.lr": 1e-3},
}

# Per model, each ZO method and the costs.json entry whose step time prices its steps.
METHODS = {
    "minilm-l6": {
        "zo-lora": ({**_ZO, "zo.params": "lora", "zo.lr": 3e-3}, "zo-lora-dense"),
        "zo-lora-hybrid": (
            {**_ZO, "zo.params": "lora", "zo.lr": 3e-3, "zo.hybrid": "head", "zo.hybrid-lr": 0.5},
            "zo-lora-dense",
        ),
        "zo-lora-hybrid-slow-head": (
            {**_ZO, "zo.params": "lora", "zo.lr": 3e-3, "zo.hybrid": "head", "zo.hybrid-lr": 0.1},
            "zo-lora-dense",
        ),
        "zo-sensitive-hybrid": (
            {
                **_ZO,
                "zo.params": "sensitive",
                "zo.sparse-fraction": 0.001,
                "zo.lr": 3e-3,
                "zo.hybrid": "head",
                "zo.hybrid-lr": 0.5,
            },
            "zo-sparse-dense",
        ),
        # The head's first-order steps alone: what the zeroth-order steps on the body add.
        "head-only": (
            {**_ZO, "zo.params": "lora", "zo.lr": 1e-9, "zo.hybrid": "head", "zo.hybrid-lr": 0.5},
            "zo-lora-dense",
        ),
        "zo-lora-hybrid-fast-head": (
            {**_ZO, "zo.params": "lora", "zo.lr": 3e-3, "zo.hybrid": "head", "zo.hybrid-lr": 1.0},
            "zo-lora-dense",
        ),
        "zo-lora-hybrid-momentum": (
            {
                **_ZO,
                "zo.params": "lora",
                "zo.lr": 3e-4,
                "zo.momentum": 0.9,
                "zo.hybrid": "head",
                "zo.hybrid-lr": 0.5,
            },
            "zo-lora-dense",
        ),
    },
    "smollm2-135m": {
        "zo-full-low-rank": (
            {**_ZO, "zo.params": "full", "zo.perturbation": "low-rank", "zo.lr": 1e-5},
            "zo-full-low-rank",
        ),
        "zo-sensitive": (
            {**_ZO, "zo.params": "sensitive", "zo.sparse-fraction": 0.001, "zo.lr": 3e-4},
            "zo-sparse-dense",
        ),
        # 3e-4, the rate of as many LoRA factors, blew the loss up: the largest entries of the
        # gradient move the loss most.
        "zo-sensitive-slow": (
            {**_ZO, "zo.params": "sensitive", "zo.sparse-fraction": 0.001, "zo.lr": 3e-5},
            "zo-sparse-dense",
        ),
        "zo-full-low-rank-momentum": (
            {
                **_ZO,
                "zo.params": "full",
                "zo.perturbation": "low-rank",
                "zo.lr": 1e-6,
                "zo.momentum": 0.9,
            },
            "zo-full-low-rank",
        ),
        # zo.lr = 0: the rate the server probes before round 1 (federated.zo.lr_probe).
        "zo-sensitive-auto": (
            {**_ZO, "zo.params": "sensitive", "zo.sparse-fraction": 0.001, "zo.lr": 0.0},
            "zo-sparse-dense",
        ),
    },
    "smollm2-wordnet": {
        "zo-lora-auto": ({**_ZO, "zo.params": "lora", "zo.lr": 0.0}, "zo-lora-dense"),
        "zo-sensitive-auto": (
            {**_ZO, "zo.params": "sensitive", "zo.sparse-fraction": 0.001, "zo.lr": 0.0},
            "zo-sparse-dense",
        ),
    },
}


def equal_compute_steps(setup: str, priced_as: str) -> int:
    """ZO steps that cost what the LoRA run's local steps cost on this set-up's model."""
    costs = COSTS[PRICED_AS[setup]]
    lora = costs["lora-step"]["step_seconds"] * LORA_STEPS[setup]
    return max(1, round(lora / costs[priced_as]["step_seconds"]))


def planned() -> dict[str, tuple[dict, int]]:
    runs = {}
    for model, methods in METHODS.items():
        shared = SETUPS[model]
        runs[f"{model}-lora-fedavg"] = ({**shared["run_config"], **LORA[model]}, shared["clients"])
        for method, (overrides, priced_as) in methods.items():
            steps = equal_compute_steps(model, priced_as)
            config = {**shared["run_config"], **overrides, "train.local-steps": steps}
            runs[f"{model}-{method}-equal"] = (config, shared["clients"])
    return runs


def main() -> None:
    torch.set_num_threads(1)
    plan = planned()

    def report(rounds: list[dict]) -> str:
        accuracy = rounds[-1].get("test_accuracy")
        return f"test loss {rounds[-1]['test_loss']:.3f}" + (
            f", accuracy {accuracy:.3f}" if accuracy is not None else ""
        )

    done = run_all("zo-learns", RUNS, plan, report)
    results = {
        "settings": {
            name: {"config": config, "clients": clients} for name, (config, clients) in plan.items()
        },
        "runs": {name: summarise(done[name], clients) for name, (_, clients) in plan.items()},
    }
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
