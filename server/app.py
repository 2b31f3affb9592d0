"""The Flower ServerApp: set up the run, loop over rounds, write the adapter and the summary."""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable
from logging import ERROR, INFO
from pathlib import Path
from typing import Any, TypeVar

import torch
from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp
from safetensors.torch import save_file

from federated.config import ConfigError, RunConfig, parse_run_config, run_config_to_flat
from federated.config.schema import auto_settings_line
from federated.devices.profiles import ProfileError
from federated.model.adapter_files import save_global_adapter
from federated.model.evaluation import EvalResult, evaluate_model
from federated.model.workspace import corpus_for, encode_indices, lora_model, server_test_indices
from federated.privacy.planned_epsilon import planned_epsilon_line
from federated.protocol import message_keys as keys
from federated.protocol.partition_keys import read_partition_keys
from federated.protocol.stop_request import take_stop_request
from federated.results import RunResults
from federated.zo.factor_steps import factor_steps_problem
from federated.zo.hybrid import hybrid_state, load_hybrid_
from federated.zo.sensitive import Mask
from federated.zo.workspace import MASK_FILE, save_mask, sensitive_mask, zo_model
from server.audit import run_audit
from server.loss_plot import plot_losses
from server.node_partitions import NodePartitions
from server.released_record import withhold_for
from server.resume import check_partition_count, resume_run
from server.round_loop import folder_for, run_rounds
from server.round_outcomes import run_counts
from server.run_clock import RunClock
from server.start_checks import (
    RunFailure,
    check_partitions,
    check_split,
    check_writable,
    wait_for_nodes,
)
from server.zo_factor_replies import zo_fallback_problem
from server.zo_rate import resolve_zo_lr
from simulation.clock_plots import plot_round_timeline, plot_test_against_hours
from simulation.driver import DeviceSimulator, clock_summary
from strategies.client_dp_strategy import ClientLevelDpStrategy
from strategies.fedkseed import FedKSeed
from strategies.global_model import GlobalModel
from strategies.registry import build_strategy
from strategies.strategy_wrapper import Strategy

app = ServerApp()
T = TypeVar("T")


def _mean_per_client(rounds: list[dict], key: str) -> float | None:
    """Bytes one client sends or receives in a round, on average over clients and rounds."""
    values = [client[key] for r in rounds for client in r["clients"]]
    return sum(values) / len(values) if values else None


def _model_files(config: RunConfig) -> tuple[str, ...]:
    if config.mode != "zo":
        return ("adapter",)
    mask = (MASK_FILE,) if config.zo.params == "sensitive" else ()
    return ("zo_sums.safetensors", "zo_model.json", *mask)


def _summary(config: RunConfig, results: RunResults, clock: RunClock) -> dict[str, Any]:
    rounds = results.rounds()
    trained = [r for r in rounds if r["round"] > 0]
    summary = {
        "run_name": results.folder.name,
        "config": run_config_to_flat(config),
        "rounds": len(trained),
        "initial_test": {k: v for k, v in rounds[0].items() if k.startswith("test_")},
        "final_test": {k: v for k, v in rounds[-1].items() if k.startswith("test_")},
        "aggregation_seconds_mean": (
            sum(r["aggregation_seconds"] for r in trained) / len(trained) if trained else None
        ),
        "model_files": [str(results.folder / name) for name in _model_files(config)],
    }
    if results.withhold is not None:  # client-level DP publishes none of the rest
        return summary
    return {
        **summary,
        "final_held_out_loss": trained[-1].get("held_out_loss") if trained else None,
        "bytes_up_total": sum(r["bytes_up"] for r in trained),
        "bytes_down_total": sum(r["bytes_down"] for r in trained),
        "bytes_up_per_client_round": _mean_per_client(trained, "bytes_up"),
        "bytes_down_per_client_round": _mean_per_client(trained, "bytes_down"),
        **run_counts(trained),
        **clock.summary(),
        **(clock_summary(rounds, config) if config.simulation.population else {}),
    }


def _start(context: Context) -> tuple[RunConfig, Strategy]:
    """The run config and the strategy; a ``ConfigError`` when either is refused."""
    config = parse_run_config(context.run_config)
    if auto := auto_settings_line(context.run_config):
        log(INFO, auto)
    if config.mode == "zo":
        zo = _loading("model.name", config.model.name, lambda: zo_model(config, _mask(config)))
        initial = FedKSeed.initial_model(config.zo.pool_size, hybrid_state(zo.hybrid))
    else:
        initial = GlobalModel(
            dict(_loading("model.name", config.model.name, lambda: lora_model(config)).initial)
        )
    return config, build_strategy(config, initial)


def _mask(config: RunConfig) -> Mask | None:
    """zo.params = sensitive: the entries that train (computed once per process)."""
    return sensitive_mask(config) if config.zo.params == "sensitive" else None


def _loading(key: str, value: str, load: Callable[[], T]) -> T:
    """What ``load`` returns; what it raises about the user's model or data, as one line that
    names the run-config key."""
    try:
        return load()
    except ConfigError:
        raise
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"run config '{key}' = {value!r}: {reason}") from None


class _ServerModel:
    """The server's copy of the global model, to evaluate it and to save the final one."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.zo = zo_model(config, _mask(config)) if config.mode == "zo" else None
        if self.zo is not None and self.zo.frozen_bytes_saved:
            log(
                INFO,
                "zo.frozen-dtype %s: the model's weights take %.1f MB less on each device",
                config.zo.frozen_dtype,
                self.zo.frozen_bytes_saved / 2**20,
            )
        self.local = None if self.zo else lora_model(config)
        self.tokenizer = self.zo.tokenizer if self.zo else self.local.tokenizer
        indices = server_test_indices(config)
        self.test_set = encode_indices(
            config, self.tokenizer, indices, limit=config.eval.max_examples
        )

    def load(self, model: GlobalModel) -> torch.nn.Module:
        if self.zo:
            self.zo.load(model.trainable[keys.SEED_SUMS])
            load_hybrid_(self.zo.hybrid, model.trainable)
            return self.zo.model
        self.local.load(model.trainable, model.base_delta)
        return self.local.model

    def evaluate(self, model: GlobalModel) -> EvalResult:
        return evaluate_model(
            self.load(model),
            self.test_set,
            self.config.task,
            batch_size=self.config.eval.batch_size,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    def save(self, model: GlobalModel, folder: Path) -> None:
        """The adapter in peft's format (LoRA), or the seed sums and how to replay them (zo)."""
        self.load(model)
        if self.local:
            save_global_adapter(self.local, model.base_delta, folder / "adapter")
            return
        z = self.config.zo
        # The seed sums, and the hybrid modules' values under their wire keys.
        save_file(model.trainable, str(folder / "zo_sums.safetensors"))
        recipe = {
            "model": self.config.model.name,
            "seed": self.config.seed,
            "pool-size": z.pool_size,
            "params": z.params,
            "perturbation": z.perturbation,
            "lr": z.lr,
            "sparse-fraction": z.sparse_fraction,
            "hybrid": z.hybrid,
        }
        (folder / _model_files(self.config)[1]).write_text(json.dumps(recipe, indent=2) + "\n")


def _log_privacy(config: RunConfig, strategy: Strategy) -> None:
    if config.dp.record_level:
        log(
            INFO,
            "record-level DP: clients release a noised record count, noised updates and their "
            "epsilon, nothing else; held-out metrics come from no client, only the test set",
        )
    if isinstance(strategy, ClientLevelDpStrategy):
        log(INFO, "%s", strategy.describe())


def _zo_nodes(config: RunConfig, strategy: Strategy) -> tuple[int, str]:
    """The steps a node that takes zeroth-order steps on the factors of this LoRA run may
    report, or 0 and why no such node can join."""
    if config.mode != "lora":
        return 0, "this is a zeroth-order run"
    problem = factor_steps_problem(config) or zo_fallback_problem(strategy)
    return (0, problem) if problem else (config.train.local_steps, "")


def _device_simulator(
    config: RunConfig, num_partitions: int, strategy: Strategy
) -> DeviceSimulator | None:
    """The run's simulated devices; None without a population."""
    if not config.simulation.population:
        return None
    try:
        zo_fallback = config.simulation.zo_fallback and config.mode == "lora"
        problem = zo_fallback_problem(strategy) if zo_fallback else None
        if problem:
            log(INFO, "device simulator: no zeroth-order fallback: %s", problem)
        devices = DeviceSimulator(
            config, num_partitions, strategy.mixed_ranks, zo_fallback and problem is None
        )
    except ProfileError as err:
        raise ConfigError(str(err)) from None
    left = devices.left_out()
    if len(left) == num_partitions:
        raise ConfigError(f"simulation.population: no device can train ({left[0]})")
    return devices


def _plot_clock(results: RunResults, config: RunConfig, title: str) -> None:
    """``simulated_time.png`` and ``round_timeline.png`` (the first trained round)."""
    rounds = results.rounds()
    plot_test_against_hours(rounds, results.folder / "simulated_time.png", title)
    timed = [r for r in rounds if r.get("simulation", {}).get("devices")]
    if timed:
        plot_round_timeline(
            timed[0], config.simulation.deadline, results.folder / "round_timeline.png"
        )


def _audit(
    config: RunConfig, server_model: _ServerModel, final: GlobalModel, results: RunResults
) -> dict[str, Any] | None:
    """audit.canaries: the one-run audit of the final model, written to ``audit.json``."""
    if not config.audit.canaries:
        return None
    record = run_audit(server_model.load(final), server_model.tokenizer, config, results.rounds())
    (results.folder / "audit.json").write_text(json.dumps(record, indent=2) + "\n")
    log(
        INFO,
        "privacy audit: %d of %d guesses right on %d canaries: epsilon >= %.3g (95%%), "
        "accountant %s",
        record["right_guesses"],
        record["guesses"],
        record["canaries"],
        record["epsilon_lower_bound"],
        record["accountant_epsilon"] or "none (no DP)",
    )
    return record


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        _run(grid, context)
    except (ConfigError, RunFailure, FileExistsError) as err:
        log(ERROR, "fedtune: %s", err)
        raise RunFailure(str(err)) from None  # Flower records the run as failed
    except OSError as err:
        if err.filename is None:  # not a file the run writes: a fault to report in full
            raise
        # Files are replaced whole (federated.atomic_file): the last complete checkpoint stays.
        line = (
            f"could not write {err.filename} ({err.strerror}); what was written before, "
            "the last finished round's checkpoint included, is kept: fedtune results "
            "RUN_DIR says how to resume"
        )
        log(ERROR, "fedtune: %s", line)
        raise RunFailure(line) from None


def _partition_keys(config: RunConfig) -> dict[int, str]:
    if not config.server.partition_keys:
        return {}
    try:
        return read_partition_keys(config.server.partition_keys)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _run(grid: Grid, context: Context) -> None:
    config, strategy = _start(context)
    bound = _partition_keys(config)  # a table that cannot be read stops the run at once
    resumed = resume_run(config, strategy) if config.resume else None
    if resumed is None:
        check_writable(Path(config.output_dir).expanduser().resolve(), "output-dir")
    else:
        check_writable(resumed[0], "resume")
    config = resolve_zo_lr(config, _mask(config), resumed[1].state["config"] if resumed else None)
    torch.set_num_threads(1)
    corpus = _loading("data.name", config.data.name, lambda: corpus_for(config))
    server_model = _loading("model.name", config.model.name, lambda: _ServerModel(config))
    described = (config.model.name, config.task, config.mode, config.strategy.name)
    log(INFO, "model %s (%s), mode %s, strategy %s", *described)
    _log_privacy(config, strategy)
    nodes = wait_for_nodes(
        grid, config.strategy.min_available_nodes, config.server.node_wait_timeout
    )
    partitions = NodePartitions(len(corpus.examples), *_zo_nodes(config, strategy), bound=bound)
    wait = config.server.node_wait_timeout or math.inf  # a cold client's first message is slow
    check_partitions(partitions.learn(grid, nodes, wait), partitions, config)
    check_split(config, partitions.num_partitions)
    if resumed is not None:
        check_partition_count(config, resumed[1], partitions.num_partitions)
    if config.dp.record_level:  # from the partitions' sizes, known once the nodes have said
        log(INFO, planned_epsilon_line(config, partitions.num_partitions))
    devices = _device_simulator(config, partitions.num_partitions, strategy)
    if resumed is None:
        folder = folder_for(config, time.strftime("%Y%m%d-%H%M%S"))
        results = RunResults.create(folder, withhold_for(config))
        run_key = secrets.token_hex(8)
        log(INFO, "fedtune: writing results to %s", results.folder)
        if (mask := _mask(config)) is not None:  # a resumed run keeps the one it has
            save_mask(mask, results.folder)
    else:
        folder, checkpoint = resumed
        results = RunResults.resume(folder, checkpoint.round, withhold_for(config))
        run_key = str(checkpoint.state["run-key"])
        log(INFO, "fedtune: resuming %s after round %d", folder, checkpoint.round)
        if take_stop_request(folder):  # left by a launch that was stopped: not this one's
            log(INFO, "fedtune: an earlier launch's stop request was removed")

    checkpoint = resumed[1] if resumed else None
    clock = RunClock.resumed_from(checkpoint.state) if checkpoint else RunClock()
    final = run_rounds(
        grid,
        strategy,
        config,
        results,
        server_model.evaluate,
        partitions,
        run_key,
        checkpoint,
        devices,
        clock,
    )

    server_model.save(final, results.folder)
    audit = _audit(config, server_model, final, results)
    title = f"{config.model.name} on {config.data.name}, {config.strategy.name}"
    plot_losses(results.rounds(), results.folder / "loss.png", title)
    if devices is not None:
        _plot_clock(results, config, title)
    summary = _summary(config, results, clock)
    if audit is not None:
        summary["audit"] = audit
    if server_model.zo is not None and server_model.zo.frozen_bytes_saved:
        summary["zo_frozen_bytes_saved"] = server_model.zo.frozen_bytes_saved
    if devices is not None:
        summary["devices"] = devices.profiles()
    results.write_summary(summary)
    log(INFO, "fedtune: done. %s", json.dumps(summary["final_test"]))
    log(INFO, "fedtune: results, metrics.jsonl, summary.json, loss.png in %s", results.folder)
