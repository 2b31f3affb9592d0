"""How the device simulator scales with the number of virtual devices on one machine.

A tiny model (tiny-bert, WordNet 8 classes), 10 clients trained a round (5% or fewer of the
population, over-selected 1.3x), 3 rounds, a mixed population of phones, boards and laptops,
for 100 to 1,000 virtual devices. Each size runs in a process of its own through Flower's
simulation engine; the memory of the whole process tree (driver, Ray's processes, the client
actors) is sampled every half second. Writes ``scale.json`` and ``scale.png``.

    PYTHONPATH=. python -m benchmarks.simulation.scale
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SIZES = (100, 250, 500, 1000)
ROUNDS = 3

_RUN = """
import json, sys, time
from tests.simulate import simulate
n, out, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
config = {"model.name": "tiny-bert", "data.name": "wordnet", "data.num-classes": 8,
          "data.max-per-class": 2000, "data.partitioner": "iid", "num-server-rounds": rounds,
          "train.local-steps": 5, "train.batch-size": 8, "strategy.fraction-train": 10 / n,
          "strategy.fraction-evaluate": 0.0, "strategy.min-train-nodes": 5,
          "strategy.min-available-nodes": n,
          "simulation.population": "phone-low:0.4,phone-high:0.3,pi5:0.2,laptop:0.1",
          "simulation.deadline": 300.0, "simulation.over-selection": 1.3,
          "output-dir": out, "run-name": f"n{n}"}
started = time.perf_counter()
simulate(config, n)
print("WALL", time.perf_counter() - started)
"""


def _tree_rss(root: int) -> float:
    """Resident bytes of ``root`` and every process under it."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += float(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def run_size(n: int, out: Path) -> dict:
    process = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(n), str(out), str(ROUNDS)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={"PYTHONPATH": str(ROOT), **_env()},
    )
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, _tree_rss(process.pid))
        time.sleep(0.5)
    wall = float(process.stdout.read().split("WALL")[-1])
    rounds = [json.loads(x) for x in (out / f"n{n}" / "metrics.jsonl").read_text().splitlines()]
    round_seconds = sum(r["round_seconds"] for r in rounds[1:])
    hours = sum(r["simulation"]["duration_s"] for r in rounds[1:]) / 3600
    return {
        "devices": n,
        "wall_seconds": wall,
        "peak_memory_bytes": peak,
        "round_seconds": round_seconds,
        "rounds_per_minute": ROUNDS / round_seconds * 60,
        "simulated_hours": hours,
    }


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    devices = [r["devices"] for r in rows]
    ax.plot(
        devices,
        [r["peak_memory_bytes"] / 1e9 for r in rows],
        marker="o",
        label="peak memory, whole simulation (GB)",
    )
    ax.plot(
        devices, [r["wall_seconds"] / 60 for r in rows], marker="s", label="wall time (minutes)"
    )
    ax.set_xlabel("virtual devices")
    ax.set_ylim(bottom=0)
    ax.set_title(f"tiny-bert, 10 clients a round, {ROUNDS} rounds, 2 cores")
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def main() -> None:
    out = Path("/tmp/fedtune-scale")
    rows = []
    for n in SIZES:
        row = run_size(n, out)
        print(json.dumps(row), flush=True)
        rows.append(row)
    (HERE / "scale.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, HERE / "scale.png")


if __name__ == "__main__":
    main()
