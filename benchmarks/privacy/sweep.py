"""Which record-level DP settings keep accuracy: a staged sweep on the privacy benchmark's
federation at epsilon 3, with about 115 and about 580 records a client.

Each stage varies one knob (expected batch, steps a round, learning rate, LoRA rank with fedavg
or ffa-lora, clipping bound) around the best settings so far and keeps the one with the highest
final accuracy (the current value on a tie). The best settings of each data size then run at
epsilon 1 and 8. Runs go through ``flwr run`` and are kept under ``runs/``, named by their
settings, so a rerun or a stage that revisits a setting reuses it.

    python -m benchmarks.privacy.sweep    # the runs, then sweep.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.flower_runs import run_all
from benchmarks.privacy.run import AUDIT, BASE, CLIENTS, DP, RUNS, accuracy_line, audit_of

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "sweep.json"

PHYSICAL_BATCH = 16  # what one DP-SGD pass holds; larger logical batches are virtual steps
DATA = {"115": {}, "580": {"data.max-per-class": 2000}}
START = {"batch": 16, "steps": 8, "lr": 3e-3, "rank": 8, "strategy": "fedavg", "clip": 1.0}
STAGE_VALUES = [
    ("batch", None),  # per data size, below
    ("steps", [4, 8]),
    ("lr", [3e-3, 1e-2]),
    ("rank", [2, 8]),
    ("strategy", ["fedavg", "ffa-lora"]),
    ("clip", [0.1, 1.0]),
]
BATCHES = {"115": [16, 64], "580": [16, 128]}
STAGES = {
    data: [(knob, values or batches) for knob, values in STAGE_VALUES]
    for data, batches in BATCHES.items()
}
EPSILON = 3.0
OTHER_EPSILONS = [1.0, 8.0]


def run_name(data: str, knobs: dict, epsilon: float) -> str:
    k = knobs
    return (
        f"sweep-{data}-eps{epsilon:g}-b{k['batch']}-s{k['steps']}-lr{k['lr']:g}"
        f"-r{k['rank']}-{k['strategy']}-c{k['clip']:g}"
    )


def run_config(data: str, knobs: dict, epsilon: float) -> dict:
    k = knobs
    physical = PHYSICAL_BATCH if k["batch"] > PHYSICAL_BATCH else 0
    return {
        **BASE,
        **DATA[data],
        **DP,
        **AUDIT,
        "dp.target-epsilon": epsilon,
        "dp.physical-batch": physical,
        "dp.max-grad-norm": k["clip"],
        "train.batch-size": k["batch"],
        "train.local-steps": k["steps"],
        "train.lr": k["lr"],
        "lora.rank": k["rank"],
        "lora.alpha": 2.0 * k["rank"],
        "strategy.name": k["strategy"],
    }


def _run(data: str, knobs: dict, epsilon: float) -> tuple[str, list[dict]]:
    name = run_name(data, knobs, epsilon)
    planned = {name: (run_config(data, knobs, epsilon), CLIENTS)}
    done = run_all("privacy-sweep", RUNS, planned, accuracy_line)
    return name, done[name]


def _outcome(name: str, rounds: list[dict]) -> dict:
    audit = audit_of(name) or {}
    return {
        "accuracy": rounds[-1]["test_accuracy"],
        "max_client_epsilon": max(c["epsilon"] or 0.0 for r in rounds[1:] for c in r["clients"]),
        "audit_epsilon_lower_bound": audit.get("epsilon_lower_bound"),
    }


def sweep(data: str) -> dict:
    """The stages of one data size: every run's accuracy by stage, and the best settings."""
    best, stages, runs = dict(START), [], {}
    for knob, values in STAGES[data]:
        scores = {}
        for value in values:
            name, rounds = _run(data, {**best, knob: value}, EPSILON)
            runs[name] = rounds
            scores[value] = rounds[-1]["test_accuracy"]
        top = max(scores.values())
        if scores.get(best[knob], -1.0) < top:
            best[knob] = next(v for v, s in scores.items() if s == top)
        stages.append({"knob": knob, "accuracy": {str(v): s for v, s in scores.items()}})
    at = {}
    for epsilon in [*OTHER_EPSILONS, EPSILON]:
        name, rounds = _run(data, best, epsilon)
        runs[name] = rounds
        at[f"{epsilon:g}"] = _outcome(name, rounds)
    start = {}
    for epsilon in [*OTHER_EPSILONS, EPSILON]:
        name, rounds = _run(data, START, epsilon)
        start[f"{epsilon:g}"] = _outcome(name, rounds)
    return {"stages": stages, "best": best, "best_at": at, "start_at": start}


def main() -> None:
    torch.set_num_threads(1)
    results = {
        "settings": {"base": BASE, "dp": DP, "data": DATA, "start": START, "epsilon": EPSILON},
        "sweeps": {},
    }
    for data in DATA:
        results["sweeps"][data] = sweep(data)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
