"""Rank the LoRA aggregation strategies: MiniLM-L6 + LoRA on WordNet definition -> category.

Every strategy runs through ``flwr run`` on Flower's simulation engine with the same data split,
rounds, local steps and seeds, at two Dirichlet skews; centralized LoRA on the pooled training
data, with the same number of optimizer steps, is the ceiling. Each finished run is kept under
``runs/``, so an interrupted benchmark resumes where it stopped.

    python benchmarks/strategies/run.py            # all runs, then results.json
    python benchmarks/strategies/report.py         # plot and table from results.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from benchmarks.flower_runs import per_client, run_rounds
from client.lora_trainer import train_lora
from federated.cli.flower_cli import FlowerCli
from federated.config import parse_run_config
from federated.model.evaluation import evaluate_model
from federated.model.workspace import (
    client_indices,
    encode_indices,
    lora_model,
    server_test_indices,
)
from strategies.registry import STRATEGIES

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
RESULTS = HERE / "results.json"

SETTINGS = {
    "clients": 20,
    "alphas": [0.1, 1.0],
    "seeds": [0, 1, 2],
    "run_config": {
        "model.name": "minilm-l6",
        "model.max-length": 32,
        "data.name": "wordnet",
        "data.num-classes": 8,
        "data.max-per-class": 400,
        "data.partitioner": "dirichlet",
        "data.test-fraction": 0.1,
        "num-server-rounds": 8,
        "lora.rank": 8,
        "lora.alpha": 16.0,
        "train.lr": 0.003,
        "train.local-steps": 8,
        "train.batch-size": 16,
        "eval.max-examples": 0,
        "eval.batch-size": 64,
        "strategy.fraction-train": 0.25,
        "strategy.fraction-evaluate": 0.0,
        "strategy.min-train-nodes": 5,
        "strategy.min-available-nodes": 20,
    },
}


# Settings of a registered strategy compared as a strategy of their own. fedsa-lora is judged by
# its personalised models: every client evaluates its own B on its held-out data each round.
VARIANTS = {
    "lora-fair-closed-form": ("lora-fair", {"strategy.lora-fair.solver": "closed-form"}),
    "fedsa-lora-personalised": ("fedsa-lora", {"strategy.fraction-evaluate": 1.0}),
}


def run_config(strategy: str, alpha: float, seed: int) -> dict:
    name, overrides = VARIANTS.get(strategy, (strategy, {}))
    return {
        **SETTINGS["run_config"],
        **overrides,
        "strategy.name": name,
        "data.dirichlet-alpha": alpha,
        "seed": seed,
    }


def federated_run(cli: FlowerCli, strategy: str, alpha: float, seed: int) -> dict:
    """One strategy's run (or its saved result): accuracy, bytes and aggregation time per round."""
    name = f"{strategy}-alpha{alpha}-seed{seed}"
    rounds = run_rounds(cli, RUNS, name, run_config(strategy, alpha, seed), SETTINGS["clients"])
    trained = rounds[1:]
    held_out = {
        key: [r[key] for r in trained]
        for key in ("held_out_accuracy", "held_out_global_accuracy")
        if all(r.get(key) is not None for r in trained)
    }
    return {
        **held_out,
        "accuracy": [r["test_accuracy"] for r in rounds],
        "bytes_up_per_client": per_client(rounds, "bytes_up"),
        "bytes_down_per_client": per_client(rounds, "bytes_down"),
        "aggregation_seconds": [r["aggregation_seconds"] for r in trained],
    }


def centralized_run(alpha: float, seed: int) -> dict:
    """LoRA on all clients' training data pooled, as many steps as a federated round gives."""
    name = f"centralized-alpha{alpha}-seed{seed}"
    saved = RUNS / name / "summary.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    config = parse_run_config(run_config("fedavg", alpha, seed))
    local = lora_model(config)
    local.load(local.initial)
    pooled = []
    for partition in range(SETTINGS["clients"]):
        pooled += client_indices(config, partition, SETTINGS["clients"])[0]
    train = encode_indices(config, local.tokenizer, pooled)
    test = encode_indices(config, local.tokenizer, server_test_indices(config))
    per_round = (
        round(SETTINGS["clients"] * config.strategy.fraction_train) * config.train.local_steps
    )
    settings = config.train.__class__(**{**vars(config.train), "local_steps": per_round})
    generator = torch.Generator().manual_seed(seed)
    pad = local.tokenizer.pad_token_id

    def accuracy() -> float:
        return evaluate_model(
            local.model, test, config.task, batch_size=64, pad_token_id=pad
        ).accuracy

    curve = [accuracy()]
    for _ in range(config.num_server_rounds):
        train_lora(local.model, train, config.task, settings, pad_token_id=pad, generator=generator)
        curve.append(accuracy())
    result = {"accuracy": curve, "steps_per_round": per_round}
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(result) + "\n")
    return result


def _finished(name: str) -> bool:
    return (RUNS / name / "summary.json").is_file()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    lora = sorted(name for name, cls in STRATEGIES.items() if cls.reply_kind == "tensors")
    parser.add_argument("--strategies", nargs="*", default=lora + sorted(VARIANTS))
    parser.add_argument(
        "--collect", action="store_true", help="start no run; gather the finished ones only"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    RUNS.mkdir(parents=True, exist_ok=True)
    cli = FlowerCli(RUNS / ".flwr-home")
    results: dict = {"settings": SETTINGS, "complete": True, "runs": {}}
    started = time.perf_counter()
    try:
        for alpha in SETTINGS["alphas"]:
            bucket = results["runs"].setdefault(f"alpha={alpha}", {})
            for seed in SETTINGS["seeds"]:
                names = {"centralized": f"centralized-alpha{alpha}-seed{seed}"}
                names |= {s: f"{s}-alpha{alpha}-seed{seed}" for s in args.strategies}
                for strategy, name in names.items():
                    if args.collect and not _finished(name):
                        results["complete"] = False
                        continue
                    t0 = time.perf_counter()
                    if strategy == "centralized":
                        run = centralized_run(alpha, seed)
                    else:
                        run = federated_run(cli, strategy, alpha, seed)
                    bucket.setdefault(strategy, []).append(run)
                    took = time.perf_counter() - t0
                    print(f"{name}: accuracy {run['accuracy'][-1]:.3f} ({took:.0f} s)", flush=True)
    finally:
        cli.close()
    results["wall_seconds"] = time.perf_counter() - started
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
