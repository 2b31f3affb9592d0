"""Which record-level DP settings keep accuracy: a staged sweep on the privacy benchmark's
federation at epsilon 3, with about 115 and about 580 records a client.

With ~115 records, each stage varies one knob (expected batch, steps a round, learning rate, LoRA
rank, fedavg or ffa-lora, clipping bound) around the best settings so far and keeps the one with
the highest final accuracy (the current value on a tie). With ~580 records a client, the runs
start from those settings and vary the expected batch (the knob that data size moves: a larger
batch at the same sampling rate), then the learning rate from 1e-3 to 3e-2 (under DP noise an
AdamW step moves each weight mostly at random, and the loss falls in proportion to the rate);
a full sweep there would take hours. The best settings of each data size then run at epsilon 1
and 8; the starting settings at each budget are the privacy benchmark's own fedavg runs. Runs
go through ``flwr run`` and are kept under ``runs/``, named by their settings, so a rerun or a
stage that revisits a setting reuses it.

    python -m benchmarks.privacy.sweep    # the runs, then sweep.json
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.flower_runs import run_all
from benchmarks.privacy.run import AUDIT, BASE, CLIENTS, DP, RUNS, accuracy_line, audit_of, runs

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
STAGES = {
    "115": [(knob, values or [16, 64]) for knob, values in STAGE_VALUES],
    "580": [("batch", [16, 64, 128]), ("lr", [1e-3, 3e-3, 1e-2, 3e-2])],
}
EPSILON = 3.0
OTHER_EPSILONS = [1.0, 8.0]
# The starting settings at each budget are the privacy benchmark's own runs (without canaries).
START_RUNS = {"115": "fedavg", "580": "fedavg-5x-data"}


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
        "dp.record.physical-batch": physical,
        "dp.record.max-grad-norm": k["clip"],
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


def stages(data: str, first: dict) -> tuple[list[dict], dict]:
    """The stages of one data size from the settings ``first``: every run's accuracy by stage,
    and the best settings."""
    best, out = dict(first), []
    for knob, values in STAGES[data]:
        scores = {}
        for value in values:
            _, rounds = _run(data, {**best, knob: value}, EPSILON)
            scores[value] = rounds[-1]["test_accuracy"]
        top = max(scores.values())
        if scores.get(best[knob], -1.0) < top:
            best[knob] = next(v for v, s in scores.items() if s == top)
        out.append({"knob": knob, "accuracy": {str(v): s for v, s in scores.items()}})
    return out, best


def start_at_epsilons(data: str) -> dict:
    """The starting settings at each budget, from the privacy benchmark's runs."""
    names = [f"{START_RUNS[data]}-eps{epsilon:g}" for epsilon in [*OTHER_EPSILONS, EPSILON]]
    planned = {name: (runs()[name], CLIENTS) for name in names}
    done = run_all("privacy-bench", RUNS, planned, accuracy_line)
    return {name.rsplit("-eps", 1)[1]: _outcome(name, done[name]) for name in names}


def at_epsilons(data: str, knobs: dict) -> dict:
    """The settings ``knobs`` at each budget: accuracy, epsilon spent, the audit's bound."""
    out = {}
    for epsilon in [*OTHER_EPSILONS, EPSILON]:
        name, rounds = _run(data, knobs, epsilon)
        out[f"{epsilon:g}"] = _outcome(name, rounds)
    return out


def main() -> None:
    torch.set_num_threads(1)
    results = {
        "settings": {"base": BASE, "dp": DP, "data": DATA, "start": START, "epsilon": EPSILON},
        "sweeps": {},
    }
    # Every data size's stages first, then the other budgets: the stages decide the settings.
    first, sweeps = START, results["sweeps"]
    for data in DATA:
        done, first = stages(data, first)
        sweeps[data] = {"stages": done, "best": first}
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    for data in reversed(DATA):  # the larger data first: there the settings tell apart
        result = sweeps[data]
        result["best_at"] = at_epsilons(data, result["best"])
        result["start_at"] = start_at_epsilons(data)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
