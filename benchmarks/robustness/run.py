"""Poisoned clients against fedavg, without and with each robust aggregation.

MiniLM-L6 on WordNet (the strategies benchmark's data), 10 clients, every one in every round,
three of them hostile: their updates scaled by 100, sign-flipped, or their example counts
inflated to a billion. Each attack runs against plain fedavg and each ``robust.method``, and so
does the clean federation, to show what robustness costs when nobody attacks. The hostile
replies come from the test suite's corrupting mod (``tests.bad_replies``), so every run goes
through Flower's simulation engine with ``tests.simulate``; finished runs are kept under
``runs/`` and skipped when the script runs again.

    PYTHONPATH=. python -m benchmarks.robustness.run      # the runs, then results.json
    PYTHONPATH=. python -m benchmarks.robustness.report   # robustness.png and the table
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from benchmarks.simulated_runs import simulated_rounds

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
RESULTS = HERE / "results.json"

CLIENTS, ATTACKERS = 10, (0, 1, 2)
BASE = {
    "model.name": "minilm-l6",
    "model.max-length": 32,
    "data.name": "wordnet",
    "data.num-classes": 8,
    "data.max-per-class": 400,
    "data.partitioner": "dirichlet",
    "data.dirichlet-alpha": 1.0,
    "num-server-rounds": 6,
    "lora.rank": 8,
    "train.lr": 0.003,
    "train.local-steps": 8,
    "train.batch-size": 16,
    "eval.max-examples": 0,
    "eval.batch-size": 64,
    "strategy.fraction-evaluate": 0.0,
    "strategy.min-train-nodes": CLIENTS,
    "strategy.min-available-nodes": CLIENTS,
    "robust.byzantine-clients": len(ATTACKERS),
    "robust.trim-fraction": 0.3,
    "seed": 0,
}
ATTACKS = {
    "clean": None,
    "scaled-100": "scaled-100",
    "sign-flip": "sign-flip",
    "inflated-weight": "inflated-examples",
}
METHODS = ("none", "norm-bound", "median", "trimmed-mean", "krum", "multi-krum")


def run(attack: str, method: str) -> list[dict]:
    """The rounds of one run: read from ``runs/`` or run first."""
    kind = ATTACKS[attack]
    corrupt = {"train": dict.fromkeys(ATTACKERS, kind)} if kind else None
    config = {**BASE, "robust.method": method}
    return simulated_rounds(RUNS, f"{attack}-{method}", config, CLIENTS, corrupt=corrupt)


def summarise(rounds: list[dict]) -> dict:
    trained = rounds[1:]
    return {
        "test_loss": [r["test_loss"] for r in rounds],
        "test_accuracy": [r["test_accuracy"] for r in rounds],
        "accepted_per_round": [r["clients_accepted"] for r in trained],
        "rejections": sorted(
            {
                c["status"].split(";")[0][:60]
                for r in trained
                for c in r["clients"]
                if c["status"].startswith("rejected")
            }
        ),
        "aggregation_seconds": [r["aggregation_seconds"] for r in trained],
    }


def main() -> None:
    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    RUNS.mkdir(parents=True, exist_ok=True)
    results = {
        "settings": {"base": BASE, "clients": CLIENTS, "attackers": list(ATTACKERS)},
        "runs": {f"{a}-{m}": summarise(run(a, m)) for a in ATTACKS for m in METHODS},
    }
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
