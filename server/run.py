"""The run, built once at start: everything a round depends on, each part made by its
constructor from the parsed run config and from what the nodes said when they joined.

``build_run`` checks what can be checked before any client trains (the config, the model, the
data, the output folder, the nodes and their partitions), so bad input stops the run here with
one line; the round loop (``server.round_loop``) then reads ``Run`` and sets nothing on it.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from logging import INFO
from pathlib import Path
from typing import Any, TypeVar

import torch
from flwr.app import ConfigRecord, Context
from flwr.common import log
from flwr.serverapp import Grid

from federated.checkpoint import Checkpoint
from federated.config import ConfigError, RunConfig, parse_run_config, run_config_to_flat
from federated.config.schema import auto_settings_line
from federated.devices.profiles import ProfileError
from federated.inference.trained_model import run_mask
from federated.model.workspace import corpus_for, lora_model
from federated.privacy.planned_epsilon import planned_epsilon_line
from federated.protocol import message_keys as keys
from federated.protocol.global_model import GlobalModel, zo_initial_model
from federated.protocol.partition_keys import read_partition_keys
from federated.protocol.stop_request import take_stop_request
from federated.results import RunResults
from federated.split.split_workspace import split_model
from federated.zo.factor_steps import factor_steps_problem
from federated.zo.hybrid import hybrid_state
from federated.zo.workspace import save_mask, zo_model
from server.node_partitions import NodePartitions
from server.progress import RoundTimes
from server.released_record import withhold_for
from server.reply_screen import TrainScreen
from server.resume import check_partition_count, resume_run
from server.run_clock import RunClock
from server.server_model import ServerModel
from server.start_checks import check_partitions, check_split, check_writable, wait_for_nodes
from server.tracking import RunTracking, check_tracking_installed
from server.update_bounds import example_bound
from server.zo_factor_replies import zo_fallback_problem
from server.zo_rate import resolve_zo_lr
from simulation.driver import DeviceSimulator
from strategies.node_pool import NodePool
from strategies.registry import build_strategy, check_strategy
from strategies.strategy_wrapper import Strategy

T = TypeVar("T")


@dataclass(frozen=True)
class Run:
    """What every round of the run depends on."""

    config: RunConfig
    strategy: Strategy  # the outermost wrapper: what the run config composed
    partitions: NodePartitions  # which node holds which partition; grows as nodes join
    pool: NodePool  # the nodes a round may draw from (the device simulator's, if any)
    screen: TrainScreen  # the checks on training replies, and the updates already accepted
    devices: DeviceSimulator | None  # simulation.population: whose work counts on its clock
    server_model: ServerModel  # tests each round's model, saves the final one
    results: RunResults  # the run's folder: metrics.jsonl, checkpoint, summary
    run_key: str  # names the files clients keep for the run (``client.node_files``)
    shared: ConfigRecord  # what every message of the run carries
    clock: RunClock
    resumed: Checkpoint | None  # the checkpoint the run goes on from
    round_times: RoundTimes  # the published rounds' times, for the time the run has left
    tracking: RunTracking  # tracking.backend's tracker, or none

    @cached_property
    def flat_config(self) -> dict[str, Any]:
        """The config as flat keys, as every checkpoint records it."""
        return run_config_to_flat(self.config)


def build_run(grid: Grid, context: Context) -> Run:
    """The run the ServerApp's context describes, once its nodes have joined; a
    ``ConfigError`` or ``RunFailure`` naming what stops it."""
    config = parse_run_config(context.run_config)
    if auto := auto_settings_line(context.run_config):
        log(INFO, auto)
    check_strategy(config)  # what the config alone refuses, before the model loads
    check_tracking_installed(config.tracking)
    strategy = build_strategy(config, _initial_model(config))
    bound = _partition_keys(config)  # a table that cannot be read stops the run at once
    resumed = resume_run(config, strategy) if config.resume else None
    checkpoint = resumed[1] if resumed else None
    if resumed is None:
        check_writable(Path(config.output_dir).expanduser().resolve(), "output-dir")
    else:
        check_writable(resumed[0], "resume")
    saved = checkpoint.state["config"] if checkpoint else None
    config = resolve_zo_lr(config, run_mask(config), saved)
    torch.set_num_threads(1)
    corpus = loading("data.name", config.data.name, lambda: corpus_for(config))
    server_model = loading("model.name", config.model.name, lambda: ServerModel(config))
    described = (config.model.name, config.task, config.mode, config.strategy.name)
    log(INFO, "model %s (%s), mode %s, strategy %s", *described)
    _log_privacy(config, strategy)
    partitions = _partitions(grid, config, strategy, len(corpus.examples), bound)
    if checkpoint is not None:
        check_partition_count(config, checkpoint, partitions.num_partitions)
    if config.dp.record_level:  # from the partitions' sizes, known once the nodes have said
        log(INFO, planned_epsilon_line(config, partitions.num_partitions))
    devices = _device_simulator(config, partitions.num_partitions, strategy)
    results, run_key = _results(config, resumed)
    replays = checkpoint.state["replays"] if checkpoint else {}
    screen = TrainScreen(
        strategy,
        config,
        examples=example_bound(config, partitions.num_partitions),
        partition_of=partitions.of,
        # The simulator's plan, or what the nodes said (a mapping that grows as they join).
        zo_steps=devices.zo_steps() if devices is not None else partitions.zo_steps,
        accepted={str(k): int(v) for k, v in replays.items()},
    )
    pool = (
        NodePool(partitions.of, devices.eligible, config.simulation.over_selection)
        if devices is not None
        else NodePool(partitions.of)
    )
    rounds = results.rounds()  # a resumed run's, up to its checkpoint
    tracking = RunTracking.open(config, results.folder, run_config_to_flat(config), rounds)
    return Run(
        config=config,
        strategy=strategy,
        partitions=partitions,
        pool=pool,
        screen=screen,
        devices=devices,
        server_model=server_model,
        results=results,
        run_key=run_key,
        shared=_shared_config(config, run_key),
        clock=RunClock.resumed_from(checkpoint.state) if checkpoint else RunClock(),
        resumed=checkpoint,
        round_times=RoundTimes(rounds),
        tracking=tracking,
    )


def _initial_model(config: RunConfig) -> GlobalModel:
    if config.mode == "zo":
        zo = loading("model.name", config.model.name, lambda: zo_model(config, run_mask(config)))
        return zo_initial_model(config.zo.pool_size, hybrid_state(zo.hybrid))
    if config.mode == "split":
        split = loading("model.name", config.model.name, lambda: split_model(config))
        return GlobalModel(dict(split.initial))
    local = loading("model.name", config.model.name, lambda: lora_model(config))
    return GlobalModel(dict(local.initial))


def loading(key: str, value: str, load: Callable[[], T]) -> T:
    """What ``load`` returns; what it raises about the user's model or data, as one line that
    names the run-config key."""
    try:
        return load()
    except ConfigError:
        raise
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"run config '{key}' = {value!r}: {reason}") from None


def _partition_keys(config: RunConfig) -> dict[int, str]:
    if not config.server.partition_keys:
        return {}
    try:
        return read_partition_keys(config.server.partition_keys)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _log_privacy(config: RunConfig, strategy: Strategy) -> None:
    if config.dp.record_level:
        log(
            INFO,
            "record-level DP: clients release a noised record count, noised updates and their "
            "epsilon, nothing else; held-out metrics come from no client, only the test set",
        )
    if described := strategy.describe():
        log(INFO, "%s", described)


def _partitions(
    grid: Grid, config: RunConfig, strategy: Strategy, examples: int, bound: dict[int, str]
) -> NodePartitions:
    """The partitions the connected nodes hold, once enough have joined and said, checked
    against the data's split."""
    nodes = wait_for_nodes(
        grid, config.strategy.min_available_nodes, config.server.node_wait_timeout
    )
    partitions = NodePartitions(examples, *_zo_nodes(config, strategy), bound=bound)
    wait = config.server.node_wait_timeout or math.inf  # a cold client's first message is slow
    check_partitions(partitions.learn(grid, nodes, wait), partitions, config)
    check_split(config, partitions.num_partitions)
    return partitions


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
        sim, lora = config.simulation, config.mode == "lora"
        problem = zo_fallback_problem(strategy) if lora else None
        fallbacks = {"zeroth-order": sim.zo_fallback and lora, "split": sim.split_fallback}
        for name, wanted in fallbacks.items():
            if wanted and problem:
                log(INFO, "device simulator: no %s fallback: %s", name, problem)
        devices = DeviceSimulator(
            config,
            num_partitions,
            strategy.mixed_ranks,
            fallbacks["zeroth-order"] and problem is None,
            fallbacks["split"] and problem is None,
        )
    except ProfileError as err:
        raise ConfigError(str(err)) from None
    left = devices.left_out()
    if len(left) == num_partitions:
        raise ConfigError(f"simulation.population: no device can train ({left[0]})")
    return devices


def _results(config: RunConfig, resumed: tuple[Path, Checkpoint] | None) -> tuple[RunResults, str]:
    """The run's results folder and run key: new ones, or the resumed run's."""
    if resumed is not None:
        folder, checkpoint = resumed
        results = RunResults.resume(folder, checkpoint.round, withhold_for(config))
        log(INFO, "fedtune: resuming %s after round %d", folder, checkpoint.round)
        if take_stop_request(folder):  # left by a launch that was stopped: not this one's
            log(INFO, "fedtune: an earlier launch's stop request was removed")
        return results, str(checkpoint.state["run-key"])
    results = RunResults.create(
        folder_for(config, time.strftime("%Y%m%d-%H%M%S")), withhold_for(config)
    )
    log(INFO, "fedtune: writing results to %s", results.folder)
    if (mask := run_mask(config)) is not None:  # a resumed run keeps the one it has
        save_mask(mask, results.folder)
    return results, secrets.token_hex(8)


def _shared_config(config: RunConfig, run_key: str) -> ConfigRecord:
    """What every message of the run carries: in a zeroth-order run the rate the seed sums are
    replayed with (constant, or replay is wrong), and the run key."""
    shared = ConfigRecord()
    if config.mode == "zo":
        shared[keys.ZO_LR] = config.zo.lr
    shared[keys.RUN_KEY] = run_key
    return shared


def folder_for(config: RunConfig, started: str) -> Path:
    """``output-dir/run-name``, the run name defaulting to model-strategy-start time."""
    name = config.run_name or f"{config.model.name}-{config.strategy.name}-{started}"
    return Path(config.output_dir).expanduser().resolve() / name
