"""Privacy against utility, and what SecAgg+ costs: MiniLM-L6 on WordNet, 20 clients.

Record-level DP at a budget of epsilon 1, 3 and 8 for the whole run (each client's noise set so
that its noised record count and every round, should it train in all of them, stay within it)
and without DP, for LoRA with fedavg and ffa-lora, for zeroth-order FedKSeed, and for fedavg on
five times the data; client-level DP (DP-FedAvg, Poisson sampling) at the same budgets, with
the noise added by the server or by the clients under SecAgg+ (distributed DP); and fedavg with
and without SecAgg+.
Every run goes through ``flwr run`` on Flower's simulation engine; finished runs are kept under
``runs/`` and skipped when the script runs again.

    python -m benchmarks.privacy.run           # the federated runs, then runs.json
    python -m benchmarks.privacy.step_cost     # DP step time and memory, step_cost.json
    python -m benchmarks.privacy.report        # plot and tables
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from benchmarks.flower_runs import per_client, run_all
from benchmarks.strategies.run import SETTINGS as STRATEGY_SETTINGS

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
RESULTS = HERE / "runs.json"

CLIENTS = 20
# The strategies benchmark's setting at Dirichlet 1.0, seed 0.
BASE = {**STRATEGY_SETTINGS["run_config"], "data.dirichlet-alpha": 1.0, "seed": 0}
EPSILONS = [1.0, 3.0, 8.0]
METHODS = {
    "fedavg": {"strategy.name": "fedavg"},
    "ffa-lora": {"strategy.name": "ffa-lora"},
    "zo-fedkseed": {
        "mode": "zo",
        "strategy.name": "fedkseed",
        "zo.params": "lora",
        "zo.perturbation": "dense",
        "zo.lr": 3e-3,
        "train.local-steps": 40,
    },
    # DP-SGD's noise shrinks against the signal as a client holds more records: the same
    # federation with five times the definitions (about 580 a client instead of 115).
    "fedavg-5x-data": {"strategy.name": "fedavg", "data.max-per-class": 2000},
}
# Every setting as written here: the physical batch too, which would otherwise resolve to the
# tuned one (the others are set in BASE).
DP = {
    "dp.mode": "record",
    "dp.record.max-grad-norm": 1.0,
    "dp.delta": 1e-5,
    "dp.record.physical-batch": 0,
}
# DP-FedAvg on the same federation: each client in a round at rate 1/4, its update clipped.
CLIENT_LEVEL = {
    "strategy.name": "fedavg",
    "dp.mode": "client",
    "dp.client.clip-norm": 0.5,
    "dp.delta": 1e-5,
}
SECAGG = {"secagg.enabled": True, "secagg.num-shares": 1.0}
# One-run privacy audit: 100 canaries, each inserted with a fair coin into one client's data.
AUDIT = {"audit.canaries": 100}
# The same DP-FedAvg with the noise added by the clients under SecAgg+ (distributed discrete
# Gaussian), sized for the 4 of the 5 expected clients that dp.distributed.dropout 0.2 leaves.
DISTRIBUTED = {**CLIENT_LEVEL, **SECAGG, "dp.mode": "distributed", **AUDIT}


def runs() -> dict[str, dict]:
    """Every run's name and run config; the two whose round times are compared run last, in turn."""
    out = {}
    for method, settings in METHODS.items():
        for epsilon in EPSILONS:
            out[f"{method}-eps{epsilon:g}"] = {
                **BASE,
                **settings,
                **DP,
                "dp.target-epsilon": epsilon,
            }
        out[f"{method}-no-dp"] = {**BASE, **settings}
    for epsilon in EPSILONS:
        out[f"client-level-eps{epsilon:g}"] = {
            **BASE,
            **CLIENT_LEVEL,
            "dp.target-epsilon": epsilon,
        }
    for epsilon in EPSILONS:
        out[f"distributed-eps{epsilon:g}"] = {
            **BASE,
            **DISTRIBUTED,
            "dp.target-epsilon": epsilon,
        }
    # Without DP the audit should find the canaries: the bound it gives is what DP takes away.
    out["fedavg-no-dp-audit"] = {**BASE, **METHODS["fedavg"], **AUDIT}
    # Every client in every round: each canary is seen about 9 times instead of about 2.
    out["fedavg-no-dp-audit-every-round"] = {
        **out["fedavg-no-dp-audit"],
        "strategy.fraction-train": 1.0,
        "strategy.min-train-nodes": 20,
    }
    # A tenth of the definitions, every client every round for 4 rounds: a canary is seen about
    # 30 times, the volume at which a model memorises a mislabelled record.
    out["fedavg-no-dp-audit-memorising"] = {
        **out["fedavg-no-dp-audit-every-round"],
        "data.max-per-class": 40,
        "num-server-rounds": 4,
    }
    out["fedavg-no-dp-audit-memorising-8-rounds"] = {
        **out["fedavg-no-dp-audit-memorising"],
        "num-server-rounds": 8,
    }
    # The same under record-level DP at epsilon 8: the bound must stay under the accountant's.
    out["fedavg-eps8-audit-memorising-8-rounds"] = {
        **out["fedavg-no-dp-audit-memorising-8-rounds"],
        **DP,
        "dp.target-epsilon": 8.0,
    }
    out["fedavg-no-dp"] = out.pop("fedavg-no-dp")
    out["fedavg-secagg"] = {**BASE, **METHODS["fedavg"], **SECAGG}
    return out


def audit_of(name: str) -> dict | None:
    """Run ``name``'s audit (its summary's copy of audit.json, which is what the repository
    keeps), or None when it ran none."""
    path = RUNS / name / "summary.json"
    return json.loads(path.read_text()).get("audit") if path.is_file() else None


def summarise(rounds: list[dict], audit: dict | None = None) -> dict:
    """A run's curves, and its audit (None when it ran none)."""
    trained = rounds[1:]
    epsilons = [max((c["epsilon"] or 0.0 for c in r["clients"]), default=0.0) for r in trained]
    return {
        "accuracy": [r["test_accuracy"] for r in rounds],
        "max_client_epsilon": epsilons,
        "client_level_epsilon": [r.get("client_dp_epsilon") for r in trained],
        "clients_per_round": [r["clients_accepted"] for r in trained],
        "audit": audit,
        "bytes_up_per_client": per_client(rounds, "bytes_up"),
        "bytes_down_per_client": per_client(rounds, "bytes_down"),
        "round_seconds": [r["round_seconds"] for r in trained],
        "aggregation_seconds": [r["aggregation_seconds"] for r in trained],
        "secagg_stages": [r["secagg_stages"] for r in trained if "secagg_stages" in r],
    }


def accuracy_line(rounds: list[dict]) -> str:
    return f"accuracy {rounds[-1]['test_accuracy']:.3f}"


def run_and_save(
    label: str, configs: dict[str, dict], clients: int, settings: dict, path: Path
) -> None:
    """Every run (kept under ``runs/``), then ``path``: the settings and each run's summary."""
    torch.set_num_threads(1)
    planned = {name: (config, clients) for name, config in configs.items()}
    done = run_all(label, RUNS, planned, accuracy_line)
    results = {
        "settings": settings,
        "runs": {name: summarise(rounds, audit_of(name)) for name, rounds in done.items()},
    }
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")


def main() -> None:
    settings = {
        "base": BASE,
        "methods": METHODS,
        "dp": DP,
        "client_level": CLIENT_LEVEL,
        "distributed": DISTRIBUTED,
    }
    run_and_save("privacy-bench", runs(), CLIENTS, settings, RESULTS)


if __name__ == "__main__":
    main()
