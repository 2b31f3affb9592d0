"""Split devices in a mixed federation: LoRA alone, LoRA with zeroth-order devices, and LoRA
with zeroth-order and split devices (with and without noise on the activations), on a
population where a quarter of the devices cannot run the model forward at all.

SmolLM2-135M on chatterbot (natural split by category, 64 tokens), 20 clients, 5 a round,
8 rounds of 5 local steps, rounds that wait for their slowest device, a fast network (Wi-Fi, 48
Mbit/s up, 94 down, 15 ms). Devices: a quarter each of boards with 1.05 GB free (below
zeroth-order inference at batch 1; a split job at 2 blocks and batch 4 fits), old phones with
1.35 GB (zeroth-order steps fit, no LoRA step even at batch 1), phones and laptops (LoRA); the
planner's estimates are in the log and ``mixed.json``.

Per federation: the test loss against simulated time, the loss at the simulated time the
fastest federation needs for its 8 rounds, bytes per client round by mode, and the simulated
compute of each kind of device. The attack's success at the cut comes from ``attack.py``'s
results (same model, same cut, same noise).

Finished runs are kept under ``runs/`` and skipped when the script runs again. Writes
``mixed.json`` and ``mixed.png``.

    PYTHONPATH=. python -m benchmarks.split.mixed
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save
from benchmarks.simulated_runs import simulated_rounds
from benchmarks.simulation.time_to_target import BASE, CLIENTS

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
DEVICES = HERE / "mixed_devices.toml"
CUT = 2
KINDS = {"board": (1.05, 5), "old-phone": (1.35, 10), "phone": (5.0, 40), "laptop": (8.0, 150)}
UP, DOWN, LATENCY = 48, 94, 15  # Mbit/s, Mbit/s, ms
ATTACK_NOISE = 0.01  # attack.py's level that brings the attack under 5% at this cut
SPLIT = {"simulation.zo-fallback": True, "simulation.split-fallback": True, "split.cut-layer": CUT}
FEDERATIONS = {
    "lora": {"simulation.zo-fallback": False},
    "lora+zo": {"simulation.zo-fallback": True},
    "lora+zo+split": SPLIT,
    "lora+zo+split, noised": SPLIT,  # clip and noise set from attack.py's results below
}


def _attack_rows() -> dict[float, dict]:
    rows = json.loads((HERE / "results.json").read_text())["rows"]
    return {r["noise_multiplier"]: r for r in rows if r["cut"] == CUT}


def _write_devices() -> None:
    DEVICES.write_text(
        "".join(
            f"[profiles.{kind}]\nmemory-gb = {memory}\ngflops = {gflops}\n"
            f"uplink-mbps = {UP}\ndownlink-mbps = {DOWN}\nlatency-ms = {LATENCY}\n"
            "availability = 1.0\nfailure-rate = 0.0\n"
            for kind, (memory, gflops) in KINDS.items()
        )
    )


def run(federation: str) -> list[dict]:
    """The rounds of one run: read from ``runs/`` or run first."""
    noise = {}
    if federation.endswith("noised"):
        noised = _attack_rows()[ATTACK_NOISE]
        noise = {
            "split.activation-clip": round(noised["clip"], 1),
            "split.activation-noise": ATTACK_NOISE,
        }
    config = {
        **BASE,
        **FEDERATIONS[federation],
        **noise,
        "simulation.profiles-file": str(DEVICES),
        "simulation.population": ",".join(f"{kind}:0.25" for kind in KINDS),
    }
    name = federation.replace(", ", "-").replace("+", "-")
    return simulated_rounds(RUNS, name, config, CLIENTS)


def summarise(rounds: list[dict]) -> dict:
    minutes, elapsed = [0.0], 0.0
    for record in rounds[1:]:
        elapsed += record["simulation"]["duration_s"] / 60
        minutes.append(elapsed)
    by_mode: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in rounds[1:]:
        bytes_of = {c["partition_id"]: c for c in record["clients"]}
        for device in record["simulation"]["devices"]:
            client = bytes_of.get(device["partition_id"], {})
            if device["status"] != "kept" or client.get("status") != "ok":
                continue
            kind = by_mode[f"{device['mode']} ({device['profile']})"]
            kind["mb_up"].append(client["bytes_up"] / 1e6)
            kind["mb_down"].append(client["bytes_down"] / 1e6)
            kind["compute_s"].append(device["compute_s"])
            kind["gflop"].append(device["compute_s"] * KINDS[device["profile"]][1])
    return {
        "simulated_minutes": minutes,
        "test_loss": [r["test_loss"] for r in rounds],
        "client_rounds": {
            mode: {
                "count": len(v["mb_up"]),
                **{f"mean_{k}": sum(x) / len(x) for k, x in v.items()},
            }
            for mode, v in sorted(by_mode.items())
        },
    }


def loss_at(summary: dict, minutes: float) -> float:
    """The test loss of the last round finished by ``minutes`` of simulated time."""
    pairs = zip(summary["simulated_minutes"], summary["test_loss"], strict=True)
    return [loss for at, loss in pairs if at <= minutes + 1e-9][-1]


def plot(results: dict[str, dict], budget: float) -> None:
    fig, (by_time, by_round) = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for federation, r in results.items():
        by_time.plot(r["simulated_minutes"], r["test_loss"], marker="o", ms=3, label=federation)
        by_round.plot(range(len(r["test_loss"])), r["test_loss"], marker="o", ms=3)
    by_time.axvline(budget, color="0.7", lw=0.8, ls=":")
    by_time.set_xlabel("simulated minutes (dotted: equal time)")
    by_round.set_xlabel("round")
    by_time.set_ylabel("server test loss")
    by_time.legend(fontsize=8)
    fig.suptitle("SmolLM2-135M, chatterbot: a quarter of the devices cannot run the model")
    save(fig, HERE / "mixed.png")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    RUNS.mkdir(parents=True, exist_ok=True)
    _write_devices()
    results = {f: summarise(run(f)) for f in FEDERATIONS}
    budget = min(r["simulated_minutes"][-1] for r in results.values())
    for r in results.values():
        r["test_loss_at_equal_time"] = loss_at(r, budget)
    attack = _attack_rows()
    settings = {**BASE, "clients": CLIENTS, "devices": KINDS, "cut": CUT}
    settings.pop("simulation.profiles-file")
    report = {
        "settings": settings,
        "equal_time_minutes": budget,
        "attack_recovered_tokens": {
            "no noise": attack[0.0]["recovered_tokens"],
            f"noise {ATTACK_NOISE}": attack[ATTACK_NOISE]["recovered_tokens"],
        },
        "runs": results,
    }
    (HERE / "mixed.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, budget)
    for name, r in results.items():
        print(name, r["test_loss"][-1], r["test_loss_at_equal_time"], r["client_rounds"])


if __name__ == "__main__":
    main()
