"""What fedtune costs over plain Flower: wall time over the clients' own compute.

100 clients, 3 rounds, 5 local steps of 4 examples on a random 2-layer Llama with SmolLM2's
49,152-token vocabulary (fedtune's tiny-llama), every client training every round, two Ray
workers of one CPU each. Three runs, each in a process of its own through Flower's simulation
engine:

- ``plain-flower``: Flower's Message API and its ``FedAvg``, transformers and peft, no fedtune
  code (``plain_flower_app.py``), on 96 random tokens per example;
- ``fedtune``: fedtune's apps on chatterbot (up to 96 tokens), with every check, the server's
  test evaluation, records and checkpoints of a round;
- ``fedtune-simulator``: the same with the device simulator on (one device profile that is
  always online and never fails, so the same clients train).

Overhead = (wall time of the rounds) / (the clients' summed step time / 2 workers): 1.0 when
the two workers do nothing but the clients' steps. fedtune's rounds also hold the server's test
evaluation, which the plain app does not do: its time is recorded and the ratio given without
it as well. Writes ``overhead.json`` and
``overhead.png``.

    PYTHONPATH=. python -m benchmarks.simulation.overhead
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CLIENTS, ROUNDS, STEPS, BATCH, WORKERS = 100, 3, 5, 4, 2

_PLAIN = """
import json, os, sys
from flwr.simulation import run_simulation
from benchmarks.simulation.plain_flower_app import SETTINGS_ENV, client, server
settings = json.loads(os.environ[SETTINGS_ENV])
run_simulation(server, client, num_supernodes=settings["clients"],
               backend_config={"client_resources": {"num_cpus": 1}})
"""

_FEDTUNE = """
import json, sys
from tests.simulate import simulate
simulate(json.loads(sys.argv[1]), int(sys.argv[2]))
"""

_DEVICE = """[profiles.bench]
memory-gb = 16
gflops = 50
uplink-mbps = 50
downlink-mbps = 100
latency-ms = 20
availability = 1
failure-rate = 0
"""


def _plain(out: Path) -> dict:
    result = out / "plain-flower.json"
    settings = {
        "clients": CLIENTS,
        "rounds": ROUNDS,
        "local-steps": STEPS,
        "batch-size": BATCH,
        "result": str(result),
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PLAIN_FLOWER_SETTINGS": json.dumps(settings)}
    subprocess.run(
        [sys.executable, "-c", _PLAIN], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    return json.loads(result.read_text())


def _fedtune(out: Path, name: str, simulator: bool) -> dict:
    config = {
        "model.name": "tiny-llama",
        "data.partitioner": "iid",
        "num-server-rounds": ROUNDS,
        "train.local-steps": STEPS,
        "train.batch-size": BATCH,
        "strategy.fraction-train": 1.0,
        "strategy.fraction-evaluate": 0.0,
        "strategy.min-train-nodes": CLIENTS,
        "strategy.min-available-nodes": CLIENTS,
        "output-dir": str(out),
        "run-name": name,
    }
    if simulator:
        profiles = out / "bench.toml"
        profiles.write_text(_DEVICE)
        config |= {"simulation.population": "bench:1", "simulation.profiles-file": str(profiles)}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, "-c", _FEDTUNE, json.dumps(config), str(CLIENTS)],
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    lines = (out / name / "metrics.jsonl").read_text().splitlines()
    rounds = [json.loads(line) for line in lines][1:]
    trained = [c for r in rounds for c in r["clients"] if c["status"] == "ok"]
    return {
        "wall_seconds": sum(r["round_seconds"] for r in rounds),
        "client_seconds": sum(c["train_seconds"] for c in trained),
        "client_rounds": len(trained),
        "server_test_seconds": sum(r["test_seconds"] for r in rounds),
    }


def main() -> None:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / "fedtune-overhead"
    out.mkdir(parents=True, exist_ok=True)
    runs = {
        "plain-flower": _plain(out),
        "fedtune": _fedtune(out, "fedtune", simulator=False),
        "fedtune-simulator": _fedtune(out, "fedtune-simulator", simulator=True),
    }
    for name, run in runs.items():
        compute = run["client_seconds"] / WORKERS
        run["overhead"] = run["wall_seconds"] / compute
        # The server's test evaluation each round is work that plain Flower's app does not do.
        if "server_test_seconds" in run:
            run["overhead_without_server_test"] = (
                run["wall_seconds"] - run["server_test_seconds"]
            ) / compute
        print(f"{name}: {run}", flush=True)
    settings = {
        "clients": CLIENTS,
        "rounds": ROUNDS,
        "local_steps": STEPS,
        "batch": BATCH,
        "workers": WORKERS,
        "model": "tiny-llama (49,152-token vocabulary, 96 tokens)",
    }
    (HERE / "overhead.json").write_text(
        json.dumps({"settings": settings, "runs": runs}, indent=2) + "\n"
    )
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    names = list(runs)
    ax.bar(
        names,
        [runs[n]["overhead"] for n in names],
        color=["0.6", "C0", "C1"],
        label="rounds' wall time",
    )
    ax.bar(
        names,
        [runs[n].get("overhead_without_server_test", runs[n]["overhead"]) for n in names],
        color="none",
        edgecolor="k",
        hatch="//",
        label="without the server's test evaluation",
    )
    ax.set_ylim(0.9, None)
    ax.legend(fontsize=7, loc="lower right")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_ylabel("wall / (client compute / workers)")
    ax.set_title(f"{CLIENTS} clients x {ROUNDS} rounds x {STEPS} steps, {WORKERS} workers")
    save(fig, HERE / "overhead.png")


if __name__ == "__main__":
    main()
