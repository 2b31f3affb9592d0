"""Client-level DP across many devices: 1,000 simulated clients, about 100 a round.

The privacy benchmark's model and task (MiniLM-L6, WordNet's 8 largest categories) with five
times the definitions spread evenly over 1,000 clients (about 14 each), on the device simulator with
always-on boards (Raspberry Pi 5 and Jetson Orin Nano: online 90% of rounds, 2% failing). With
client-level DP each online client joins a round with probability 0.1 (secret Poisson sampling),
its update clipped to ``dp.client.clip-norm``, the noise set so the whole run stays within
epsilon 1, 3 or 8; without DP Flower samples a tenth of the clients a round.

    python -m benchmarks.privacy.many_clients    # the runs, then many_clients.json
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.privacy.run import AUDIT, BASE, EPSILONS, run_and_save

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "many_clients.json"

CLIENTS = 1000
FEDERATION = {
    **BASE,
    "data.max-per-class": 2000,
    "data.partitioner": "iid",
    "num-server-rounds": 20,
    "train.local-steps": 2,
    "train.batch-size": 8,
    "eval.max-examples": 640,
    "strategy.fraction-train": 0.1,
    "strategy.min-train-nodes": 10,
    "strategy.min-available-nodes": CLIENTS,
    "simulation.population": "pi5:0.5,jetson-orin-nano:0.5",
    **AUDIT,
}
CLIENT_LEVEL = {"dp.mode": "client", "dp.client.clip-norm": 0.5, "dp.delta": 1e-5}


def runs() -> dict[str, dict]:
    out = {
        f"clients1000-eps{e:g}": {**FEDERATION, **CLIENT_LEVEL, "dp.target-epsilon": e}
        for e in EPSILONS
    }
    out["clients1000-no-dp"] = dict(FEDERATION)
    return out


def main() -> None:
    settings = {"federation": FEDERATION, "client_level": CLIENT_LEVEL}
    run_and_save("privacy-many", runs(), CLIENTS, settings, RESULTS)


if __name__ == "__main__":
    main()
