"""The Flower ServerApp: set up the run, loop over rounds, write the adapter and the summary."""

from __future__ import annotations

import json
import random
import time
from logging import ERROR, INFO

import torch
from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from federated.config import ConfigError, RunConfig, parse_run_config, run_config_to_flat
from federated.evaluation import EvalResult, evaluate_model
from federated.lora import load_trainable_state, save_adapter, trainable_state
from federated.results import RunResults
from federated.workspace import encode_indices, lora_model, server_test_indices
from server.loss_plot import plot_losses
from server.round_loop import folder_for, run_rounds
from strategies.lora_strategy import LoraStrategy
from strategies.registry import STRATEGIES

app = ServerApp()


def _strategy(config: RunConfig) -> LoraStrategy:
    s = config.strategy
    return STRATEGIES[s.name](
        fraction_train=s.fraction_train,
        fraction_evaluate=s.fraction_evaluate,
        min_train_nodes=s.min_train_nodes,
        min_evaluate_nodes=s.min_train_nodes if s.fraction_evaluate > 0 else 0,
        min_available_nodes=s.min_available_nodes,
    )


def _mean_per_client(rounds: list[dict], key: str) -> float | None:
    """Bytes one client sends or receives in a round, on average over clients and rounds."""
    values = [client[key] for r in rounds for client in r["clients"]]
    return sum(values) / len(values) if values else None


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        config = parse_run_config(context.run_config)
    except ConfigError as err:
        log(ERROR, "%s", err)
        raise SystemExit(2) from None
    torch.set_num_threads(1)
    # Flower samples clients with the `random` module; seeding it makes the client draw repeatable.
    random.seed(config.seed)
    started = time.strftime("%Y%m%d-%H%M%S")
    results = RunResults(folder_for(config, started))
    log(INFO, "fedtune: writing results to %s", results.folder)

    model, tokenizer = lora_model(config)
    initial = trainable_state(model)
    test_set = encode_indices(
        config, tokenizer, server_test_indices(config), limit=config.eval.max_examples
    )
    log(
        INFO,
        "model %s (%s), %d trainable tensors, test set of %d examples",
        config.model.name,
        config.task,
        len(initial),
        len(test_set),
    )

    def evaluate_global(tensors: dict[str, torch.Tensor]) -> EvalResult:
        load_trainable_state(model, tensors)
        return evaluate_model(
            model,
            test_set,
            config.task,
            batch_size=config.eval.batch_size,
            pad_token_id=tokenizer.pad_token_id,
        )

    wall_started = time.perf_counter()
    final = run_rounds(grid, _strategy(config), initial, config, results, evaluate_global)

    load_trainable_state(model, final)
    adapter_dir = results.folder / "adapter"
    save_adapter(model, adapter_dir)
    rounds = results.rounds()
    plot_losses(
        rounds,
        results.folder / "loss.png",
        f"{config.model.name} on {config.data.name}, {config.strategy.name}",
    )
    trained = [r for r in rounds if r["round"] > 0]
    summary = {
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
        "rejected_replies": sum(r["clients_sampled"] - r["clients_accepted"] for r in trained),
        "wall_seconds": time.perf_counter() - wall_started,
        "adapter": str(adapter_dir),
    }
    results.write_summary(summary)
    log(INFO, "fedtune: done. %s", json.dumps(summary["final_test"]))
    log(
        INFO, "fedtune: adapter, metrics.jsonl, summary.json and loss.png are in %s", results.folder
    )
