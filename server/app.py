"""The Flower ServerApp: set up the run, loop over rounds, write the adapter and the summary."""

from __future__ import annotations

import json
import random
import time
from logging import ERROR, INFO
from typing import Any

import torch
from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from federated.adapter_files import save_global_adapter
from federated.config import ConfigError, RunConfig, parse_run_config, run_config_to_flat
from federated.evaluation import EvalResult, evaluate_model
from federated.results import RunResults
from federated.workspace import encode_indices, lora_model, server_test_indices
from server.loss_plot import plot_losses
from server.round_loop import folder_for, run_rounds
from strategies.lora_strategy import GlobalModel, LoraStrategy
from strategies.registry import build_strategy

app = ServerApp()


def _mean_per_client(rounds: list[dict], key: str) -> float | None:
    """Bytes one client sends or receives in a round, on average over clients and rounds."""
    values = [client[key] for r in rounds for client in r["clients"]]
    return sum(values) / len(values) if values else None


def _summary(config: RunConfig, results: RunResults, wall_seconds: float) -> dict[str, Any]:
    rounds = results.rounds()
    trained = [r for r in rounds if r["round"] > 0]
    return {
        "run_name": results.folder.name,
        "config": run_config_to_flat(config),
        "rounds": len(trained),
        "initial_test": {k: v for k, v in rounds[0].items() if k.startswith("test_")},
        "final_test": {k: v for k, v in rounds[-1].items() if k.startswith("test_")},
        "final_held_out_loss": trained[-1].get("held_out_loss") if trained else None,
        "bytes_up_total": sum(r["bytes_up"] for r in trained),
        "bytes_down_total": sum(r["bytes_down"] for r in trained),
        "bytes_up_per_client_round": _mean_per_client(trained, "bytes_up"),
        "bytes_down_per_client_round": _mean_per_client(trained, "bytes_down"),
        "aggregation_seconds_mean": (
            sum(r["aggregation_seconds"] for r in trained) / len(trained) if trained else None
        ),
        "rejected_replies": sum(r["clients_sampled"] - r["clients_accepted"] for r in trained),
        "wall_seconds": wall_seconds,
        "adapter": str(results.folder / "adapter"),
    }


def _start(context: Context) -> tuple[RunConfig, LoraStrategy]:
    """The run config and the strategy, or one logged line and exit when either is refused."""
    try:
        config = parse_run_config(context.run_config)
        local = lora_model(config)
        return config, build_strategy(config, GlobalModel(dict(local.initial)))
    except ConfigError as err:
        log(ERROR, "%s", err)
        raise SystemExit(2) from None


@app.main()
def main(grid: Grid, context: Context) -> None:
    config, strategy = _start(context)
    torch.set_num_threads(1)
    # Flower samples clients with the `random` module; seeding it makes the client draw repeatable.
    random.seed(config.seed)
    results = RunResults(folder_for(config, time.strftime("%Y%m%d-%H%M%S")))
    log(INFO, "fedtune: writing results to %s", results.folder)

    local = lora_model(config)
    test_indices = server_test_indices(config)
    test_set = encode_indices(config, local.tokenizer, test_indices, limit=config.eval.max_examples)
    described = (config.model.name, config.task, config.strategy.name, len(test_set))
    log(INFO, "model %s (%s), strategy %s, test set of %d examples", *described)

    def evaluate_global(model: GlobalModel) -> EvalResult:
        local.load(model.trainable, model.base_delta)
        return evaluate_model(
            local.model,
            test_set,
            config.task,
            batch_size=config.eval.batch_size,
            pad_token_id=local.tokenizer.pad_token_id,
        )

    wall_started = time.perf_counter()
    final = run_rounds(grid, strategy, config, results, evaluate_global)

    local.load(final.trainable, final.base_delta)
    save_global_adapter(local, final.base_delta, results.folder / "adapter")
    title = f"{config.model.name} on {config.data.name}, {config.strategy.name}"
    plot_losses(results.rounds(), results.folder / "loss.png", title)
    summary = _summary(config, results, time.perf_counter() - wall_started)
    results.write_summary(summary)
    log(INFO, "fedtune: done. %s", json.dumps(summary["final_test"]))
    log(
        INFO, "fedtune: adapter, metrics.jsonl, summary.json and loss.png are in %s", results.folder
    )
