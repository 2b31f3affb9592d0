"""The round loop: train, validate, aggregate, evaluate, record, checkpoint, report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid

from federated.config import RunConfig, run_config_to_flat
from federated.model.evaluation import EvalResult
from federated.protocol import message_keys as keys
from federated.protocol.reply_contract import eval_metric_keys
from federated.protocol.stop_request import take_stop_request
from federated.results import RunResults
from server.checkpoint import Checkpoint, save_checkpoint
from server.exchange import Exchange, exchange
from server.node_partitions import NodePartitions
from server.reply_screen import ClientRound, TrainScreen, screen_evaluate
from server.round_outcomes import EVALUATED_ONLY, round_counts
from server.run_clock import RunClock
from server.secure_round import secure_evaluate_round, secure_train_round
from server.start_checks import RunFailure
from server.update_bounds import example_bound
from simulation.driver import DeviceSimulator, RoundClock
from strategies.client_dp_strategy import ClientLevelDpStrategy
from strategies.global_model import GlobalModel
from strategies.node_pool import NodePool
from strategies.strategy_wrapper import Strategy

GlobalEvaluation = Callable[[GlobalModel], EvalResult]


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _progress(stage: str) -> Callable[[int, int], None]:
    return lambda done, total: log(INFO, "    %s: %d/%d clients done", stage, done, total)


# The clients' evaluation metrics recorded per round, beside the loss.
_HELD_OUT_METRICS = (
    keys.EVAL_PERPLEXITY,
    keys.EVAL_ACCURACY,
    keys.EVAL_GLOBAL_LOSS,
    keys.EVAL_GLOBAL_ACCURACY,
)


def _prefixed(prefix: str, result: EvalResult) -> dict[str, float]:
    return {f"{prefix}_{name}": value for name, value in result.metrics().items()}


@dataclass
class _Training:
    """One try at a round's training: what was exchanged, what passed, what it made."""

    exchange: Exchange
    valid: list[Message]
    clients: dict[int, ClientRound]
    metrics: MetricRecord | None
    aggregation_seconds: float
    counts: bool  # the model moved, or the round's clients declined it (privacy budgets)
    clock: RoundClock | None = None  # the round on the device simulator's clock
    stages: dict | None = None  # SecAgg+: what each stage cost
    failure: str | None = None  # why the try does not count (and the round is tried again)
    retried: list[str] = field(default_factory=list)  # why each earlier try did not count


def _train(
    grid: Grid,
    strategy: Strategy,
    config: RunConfig,
    screen: TrainScreen,
    round_try: tuple[int, int],
    pool: NodePool,
    shared: ConfigRecord,
    devices: DeviceSimulator | None,
) -> _Training:
    """Try ``round_try`` = (round, try) at a round: sample from ``pool``, train, screen the
    replies and, with enough sound ones, aggregate them (``shared``: what every message
    carries). With the device simulator, only the messages whose work counts on its clock are
    sent."""
    server_round = round_try[0]
    sent = strategy.training_messages(server_round, grid, pool, shared)
    clock = None
    if devices is not None:
        upload = sum(t.numel() * t.element_size() for t in strategy.reply_reference().values())
        sent, clock = devices.schedule(sent, screen.partition_of, server_round, upload)
    if config.secagg.enabled:
        outcome = secure_train_round(grid, sent, strategy, config, round_try, _progress)
        valid, clients = screen.screen(outcome.exchange, outcome.check, server_round, masked=True)
        # A round without a sum leaves the model, unless client-level DP released its noise.
        counts = outcome.failure is None or isinstance(strategy, ClientLevelDpStrategy)
        return _Training(
            outcome.exchange,
            valid,
            clients,
            outcome.metrics,
            outcome.aggregation_seconds,
            counts,
            stages=outcome.stages,
            failure=outcome.failure,
        )
    train_ex = exchange(
        grid, sent, timeout=config.server.round_timeout, on_reply=_progress("train")
    )
    valid, clients = screen.screen(train_ex, screen.reply_check(server_round), server_round)
    declined = sum(c.status.startswith("declined") for c in clients.values())
    needed = config.strategy.min_train_nodes
    # Client-level DP: every draw releases (its noise alone, if no reply is sound).
    enough = len(valid) >= needed or isinstance(strategy, ClientLevelDpStrategy)
    if not enough:
        strategy.skip_train(train_ex.replies)
        why = f"{len(valid)} sound replies, strategy.min-train-nodes asks for {needed}"
        return _Training(
            train_ex, valid, clients, None, 0.0, len(valid) + declined >= needed, clock, failure=why
        )
    aggregation_started = time.perf_counter()
    _, metrics = strategy.aggregate_train(server_round, valid)
    return _Training(
        train_ex, valid, clients, metrics, time.perf_counter() - aggregation_started, True, clock
    )


def _train_with_retries(
    grid: Grid,
    strategy: Strategy,
    config: RunConfig,
    screen: TrainScreen,
    server_round: int,
    pool: NodePool,
    shared: ConfigRecord,
    devices: DeviceSimulator | None,
) -> _Training:
    """The round's training, tried again while a try does not count (too few sound replies,
    or under SecAgg+ no usable sum)."""
    tries, retried = config.server.round_retries + 1, []
    for attempt in range(1, tries + 1):
        round_try = (server_round, attempt)
        training = _train(grid, strategy, config, screen, round_try, pool, shared, devices)
        if training.counts:
            if not training.valid:
                log(WARNING, "    no valid update this round: the global model stays as it was")
            training.retried = retried
            return training
        retried.append(f"try {attempt}: {training.failure}")
        log(
            WARNING,
            "    round %d, try %d of %d: %s",
            server_round,
            attempt,
            tries,
            training.failure,
        )
    last = _checkpoint_kept(server_round)
    raise RunFailure(
        f"round {server_round} did not train in {tries} tries ({training.failure}); {last} "
        "(the log above names each client's reply)"
    )


def run_rounds(
    grid: Grid,
    strategy: Strategy,
    config: RunConfig,
    results: RunResults,
    evaluate_global: GlobalEvaluation,
    partitions: NodePartitions,
    run_key: str,
    resumed: Checkpoint | None = None,
    devices: DeviceSimulator | None = None,
    clock: RunClock | None = None,
) -> GlobalModel:
    """Run ``config.num_server_rounds`` rounds from the strategy's model, or those after the
    ``resumed`` checkpoint's round (the strategy restored from it); return the final model.
    ``run_key`` names the files clients keep for the run (``client.node_files``).
    ``devices``: the device simulator, which decides on its clock whose work counts.
    ``partitions`` knows the nodes that said which partition they hold; nodes that join later
    are asked before the round that could sample them."""
    rounds = config.num_server_rounds
    timeout = config.server.round_timeout
    clock = clock or RunClock()
    screen = TrainScreen(strategy, config)
    screen.examples = example_bound(config, partitions.num_partitions)
    screen.partition_of = partitions.of
    # The simulator's plan, or what the nodes said at start (a mapping that grows as they join).
    screen.zo_steps = devices.zo_steps() if devices is not None else partitions.zo_steps
    pool = NodePool(partitions.of)
    if devices is not None:
        pool = NodePool(partitions.of, devices.eligible, config.simulation.over_selection)
    shared = _shared_config(config, run_key)
    left_out = [{"node_id": n, "reason": why} for n, why in sorted(partitions.refused.items())]
    if resumed is None:
        initial_test = evaluate_global(strategy.model)
        results.append_round(
            {"round": 0, **_prefixed("test", initial_test), "nodes_left_out": left_out}
        )
        log(INFO, "[round 0/%d] initial model: test loss %.4f", rounds, initial_test.loss)
    else:
        screen.replays.accepted = {str(k): int(v) for k, v in resumed.state["replays"].items()}
    first = resumed.round + 1 if resumed else 1
    flat_config = run_config_to_flat(config)
    for server_round in range(first, rounds + 1):
        if take_stop_request(results.folder):
            raise RunFailure(
                f"stopped at the operator's request before round {server_round}; "
                f"{_checkpoint_kept(server_round)}"
            )
        started = time.perf_counter()
        log(INFO, "[round %d/%d] training", server_round, rounds)
        if isinstance(strategy, ClientLevelDpStrategy) and not strategy.budget_allows(server_round):
            break
        partitions.learn(grid, grid.get_node_ids(), config.server.round_timeout)
        training = _train_with_retries(
            grid, strategy, config, screen, server_round, pool, shared, devices
        )
        train_ex, valid, clients = training.exchange, training.valid, training.clients
        train_metrics, aggregation_seconds = training.metrics, training.aggregation_seconds

        eval_ex, eval_metrics, verdicts, eval_stages = Exchange(), None, {}, None
        sent = []
        if not config.dp.quiet_clients:
            sent = strategy.evaluation_messages(server_round, grid, pool, shared)
        if sent and config.secagg.enabled:  # the held-out statistics travel masked too
            secure = secure_evaluate_round(grid, sent, strategy, config, server_round, _progress)
            eval_ex, eval_metrics, eval_stages = secure.exchange, secure.metrics, secure.stages
            verdicts = {
                r.metadata.src_node_id: f"rejected: {why}" if (why := secure.check(r)) else "ok"
                for r in eval_ex.replies
            }
        elif sent:  # private clients (dp.quiet-clients) release nothing about held-out data
            eval_ex = exchange(grid, sent, timeout=timeout, on_reply=_progress("evaluate"))
            expected = eval_metric_keys(config.task, strategy.eval_payload().plan.keep_b)
            sound, verdicts = screen_evaluate(
                eval_ex, expected, config.eval.max_examples, partitions.of
            )
            eval_metrics = strategy.aggregate_evaluate(server_round, sound)
        test_started = time.perf_counter()
        test = evaluate_global(strategy.model)
        test_seconds = time.perf_counter() - test_started

        for node in eval_ex.timed_out:
            verdicts.setdefault(node, "no reply before server.round-timeout")
        for node, reason in eval_ex.unreachable.items():
            verdicts.setdefault(node, reason)
        for node in {*eval_ex.bytes_down, *verdicts} - set(clients):  # asked to evaluate only
            clients[node] = ClientRound(node, EVALUATED_ONLY, partitions.of.get(node))
        for node, n in eval_ex.bytes_down.items():
            clients[node].bytes_down += n
        for node, n in eval_ex.bytes_up.items():
            clients[node].bytes_up += n
        for node, verdict in verdicts.items():
            clients[node].eval_status = verdict
        record: dict[str, Any] = {
            "round": server_round,
            "clients_sampled": len(train_ex.bytes_down),
            "clients_accepted": len(valid),
            "evaluations_rejected": sum(v.startswith("rejected") for v in verdicts.values()),
            **round_counts((c.status for c in clients.values()), verdicts.values()),
            "train_loss": train_metrics.get(keys.TRAIN_LOSS) if train_metrics else None,
            "held_out_loss": float(eval_metrics[keys.EVAL_LOSS]) if eval_metrics else None,
            **{
                f"held_out_{name.removeprefix('eval-').replace('-', '_')}": float(value)
                for name, value in (eval_metrics or {}).items()
                if name in _HELD_OUT_METRICS
            },
            **_prefixed("test", test),
            "train_bytes_down": sum(train_ex.bytes_down.values()),
            "train_bytes_up": sum(train_ex.bytes_up.values()),
            "eval_bytes_down": sum(eval_ex.bytes_down.values()),
            "eval_bytes_up": sum(eval_ex.bytes_up.values()),
            "aggregation_seconds": aggregation_seconds,
            "test_seconds": test_seconds,
            "round_seconds": time.perf_counter() - started,
            "clients": [vars(c) for c in sorted(clients.values(), key=_partition_order)],
        }
        if training.clock is not None:
            record["simulation"] = training.clock.record()
        if training.stages is not None:
            record["secagg_stages"] = training.stages
        if training.retried:
            record["retried"] = training.retried
        if eval_stages is not None:
            record["secagg_evaluation_stages"] = eval_stages
        report = strategy.report() if isinstance(strategy, ClientLevelDpStrategy) else None
        if report is not None:
            record.update({f"client_dp_{k}": v for k, v in vars(report).items()})
        record["bytes_down"] = record["train_bytes_down"] + record["eval_bytes_down"]
        record["bytes_up"] = record["train_bytes_up"] + record["eval_bytes_up"]
        results.append_round(record)
        state = {
            "config": flat_config,
            "run-key": run_key,
            "strategy": strategy.state_info(),
            "replays": screen.replays.accepted,
            "num-partitions": partitions.num_partitions,
            **clock.state(),
        }
        save_checkpoint(results.folder, Checkpoint(server_round, strategy.state_tensors(), state))
        published = results.withhold(record) if results.withhold else record
        log(INFO, "%s", _round_line(published, rounds))
    return strategy.model


def _shared_config(config: RunConfig, run_key: str) -> ConfigRecord:
    """What every message of the run carries: in a zeroth-order run the rate the seed sums are
    replayed with (constant, or replay is wrong), and the run key."""
    shared = ConfigRecord()
    if config.mode == "zo":
        shared[keys.ZO_LR] = config.zo.lr
    shared[keys.RUN_KEY] = run_key
    return shared


def _checkpoint_kept(server_round: int) -> str:
    """What a run that stops before ``server_round`` finishes leaves to resume from."""
    if server_round > 1:
        return f"the model of round {server_round - 1} is the run's last checkpoint"
    return "no round finished, so there is no checkpoint to resume from"


def _partition_order(client: ClientRound) -> tuple[float, int]:
    partition = client.partition_id
    return (float("inf") if partition is None else partition), client.node_id


def _round_line(record: dict[str, Any], rounds: int) -> str:
    """The round's progress line, from what the run publishes about it."""

    def number(key: str) -> str:
        value = record.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    line = f"[round {record['round']}/{rounds}]"
    if "clients_sampled" in record:
        line += (
            f" clients {record['clients_accepted']}/{record['clients_sampled']}"
            f" | train loss {number('train_loss')} | held-out loss {number('held_out_loss')} |"
        )
    line += f" test loss {number('test_loss')}"
    if "bytes_up" in record:
        line += (
            f" | up {_megabytes(record['bytes_up'])} down {_megabytes(record['bytes_down'])}"
            f" | {record['round_seconds']:.1f} s"
        )
    spent = [c["epsilon"] for c in record.get("clients", []) if c.get("epsilon") is not None]
    if spent:
        line += f" | record-level epsilon up to {max(spent):.3g}"
    if "client_dp_epsilon" in record:
        line += f" | client-level epsilon {record['client_dp_epsilon']:.3g}"
    return line


def folder_for(config: RunConfig, started: str) -> Path:
    """``output-dir/run-name``, the run name defaulting to model-strategy-start time."""
    name = config.run_name or f"{config.model.name}-{config.strategy.name}-{started}"
    return Path(config.output_dir).expanduser().resolve() / name
