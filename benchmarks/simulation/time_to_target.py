"""Time-to-target on a mixed population: LoRA, zeroth-order and a mixed federation, on fast
and slow networks, in simulated hours and bytes.

SmolLM2-135M on chatterbot (natural split by category, 64 tokens), 20 clients, 5 a round,
8 rounds of 5 local steps, rounds that wait for their slowest device. Half the devices are old
phones with 1.15 GB free for the app: a LoRA step does not fit even at batch 1, zeroth-order
steps do at batch 2 (the planner's estimate). A quarter are phones, a quarter laptops
(``time_to_target_devices.toml``; memory and speed from the presets' sources). Networks: fast
(Wi-Fi, 48 Mbit/s up, 94 down, 15 ms) and slow (congested cellular, 0.5 up, 2 down, 150 ms).

- ``lora``: first-order LoRA (fedavg); the old phones are left out, and their categories unseen.
- ``mixed``: the same, with the old phones on zeroth-order steps on the same factors.
- ``zo``: every device on zeroth-order steps on LoRA factors (FedKSeed, zo.params = lora).

Finished runs are kept under ``runs/`` and skipped when the script runs again. Writes
``time_to_target.json`` and ``time_to_target.png``.

    PYTHONPATH=. python -m benchmarks.simulation.time_to_target
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save
from benchmarks.simulated_runs import simulated_rounds

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
DEVICES = HERE / "time_to_target_devices.toml"
CLIENTS = 20
TARGETS = (3.0, 2.5, 2.0)
NETWORKS = {"fast": (48, 94, 15), "slow": (0.5, 2, 150)}  # uplink, downlink Mbit/s; latency ms
KINDS = {"old-phone": (1.15, 10), "phone": (5.0, 40), "laptop": (8.0, 150)}  # GB, GFLOP/s
BASE = {
    "model.name": "smollm2-135m",
    "model.max-length": 64,
    "num-server-rounds": 8,
    "train.local-steps": 5,
    "train.batch-size": 4,
    "zo.lr": 3e-4,
    "zo.eps": 1e-3,
    "zo.pool-size": 1024,  # the zo benchmark's sweep
    "strategy.fraction-train": 0.25,
    "strategy.fraction-evaluate": 0.0,
    "strategy.min-train-nodes": 4,
    "strategy.min-available-nodes": CLIENTS,
    "eval.max-examples": 64,
    "simulation.profiles-file": str(DEVICES),
    "seed": 0,
}
FEDERATIONS = {
    "lora": {"simulation.zo-fallback": False},
    "mixed": {"simulation.zo-fallback": True},
    "zo": {"mode": "zo", "strategy.name": "fedkseed", "zo.params": "lora"},
}


def _write_devices() -> None:
    rows = []
    for network, (up, down, latency) in NETWORKS.items():
        for kind, (memory, gflops) in KINDS.items():
            rows.append(
                f"[profiles.{kind}-{network}]\nmemory-gb = {memory}\ngflops = {gflops}\n"
                f"uplink-mbps = {up}\ndownlink-mbps = {down}\nlatency-ms = {latency}\n"
                "availability = 1.0\nfailure-rate = 0.0\n"
            )
    DEVICES.write_text("".join(rows))


def run(federation: str, network: str) -> list[dict]:
    """The rounds of one run: read from ``runs/`` or run first."""
    population = f"old-phone-{network}:0.5,phone-{network}:0.25,laptop-{network}:0.25"
    config = {**BASE, **FEDERATIONS[federation], "simulation.population": population}
    return simulated_rounds(RUNS, f"{federation}-{network}", config, CLIENTS)


def summarise(rounds: list[dict]) -> dict:
    hours, elapsed = [0.0], 0.0
    for record in rounds[1:]:
        elapsed += record["simulation"]["duration_s"] / 3600
        hours.append(elapsed)
    losses = [r["test_loss"] for r in rounds]
    reached = {
        f"{target:g}": next(
            (h for h, loss in zip(hours, losses, strict=True) if loss <= target), None
        )
        for target in TARGETS
    }
    modes: dict[str, int] = {}
    for record in rounds[1:]:
        for device in record["simulation"]["devices"]:
            if device["status"] == "kept":
                modes[device["mode"]] = modes.get(device["mode"], 0) + 1
    return {
        "simulated_hours": hours,
        "test_loss": losses,
        "hours_to_test_loss": reached,
        "bytes_up": sum(r["bytes_up"] for r in rounds[1:]),
        "bytes_down": sum(r["bytes_down"] for r in rounds[1:]),
        "client_rounds_by_mode": modes,
    }


def plot(results: dict[str, dict]) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, network in zip(axes, NETWORKS, strict=True):
        for federation in FEDERATIONS:
            r = results[f"{federation}-{network}"]
            mb = (r["bytes_up"] + r["bytes_down"]) / 1e6
            ax.plot(
                [h * 60 for h in r["simulated_hours"]],
                r["test_loss"],
                marker="o",
                ms=3,
                label=f"{federation} ({mb:.1f} MB)",
            )
        for target in TARGETS:
            ax.axhline(target, color="0.8", lw=0.8, ls=":")
        up, down, latency = NETWORKS[network]
        ax.set_title(f"{network} network ({up} up / {down} down Mbit/s, {latency} ms)")
        ax.set_xlabel("simulated minutes")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("server test loss")
    save(fig, HERE / "time_to_target.png")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    RUNS.mkdir(parents=True, exist_ok=True)
    _write_devices()
    results = {f"{f}-{n}": summarise(run(f, n)) for n in NETWORKS for f in FEDERATIONS}
    settings = {**BASE, "clients": CLIENTS, "networks": NETWORKS, "devices": KINDS}
    (HERE / "time_to_target.json").write_text(
        json.dumps({"settings": settings, "runs": results}, indent=2) + "\n"
    )
    plot(results)
    for name, r in results.items():
        print(name, r["hours_to_test_loss"], r["bytes_up"], r["bytes_down"], r["test_loss"][-1])


if __name__ == "__main__":
    main()
