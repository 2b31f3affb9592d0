"""A round's record stage: one line of ``metrics.jsonl``, the checkpoint, the tracker's step,
the progress line."""

from __future__ import annotations

import time
from collections.abc import Mapping
from logging import INFO
from typing import Any

from flwr.common import log

from federated.checkpoint import Checkpoint, save_checkpoint
from federated.model.evaluation import EvalResult
from federated.protocol import message_keys as keys
from server.evaluate_stage import Evaluation
from server.progress import duration
from server.reply_screen import ClientRound
from server.round_outcomes import EVALUATED_ONLY, round_counts
from server.run import Run
from server.train_stage import Training

# The clients' evaluation metrics recorded per round, beside the loss.
_HELD_OUT_METRICS = (
    keys.EVAL_PERPLEXITY,
    keys.EVAL_ACCURACY,
    keys.EVAL_GLOBAL_LOSS,
    keys.EVAL_GLOBAL_ACCURACY,
)


def prefixed(prefix: str, result: EvalResult) -> dict[str, float]:
    return {f"{prefix}_{name}": value for name, value in result.metrics().items()}


def record_round(
    run: Run, server_round: int, training: Training, evaluation: Evaluation, started: float
) -> None:
    """Append the round's record, checkpoint the run after it and log what it publishes
    (``started``: when the round began, on ``time.perf_counter``)."""
    record = _record(run, server_round, training, evaluation, started)
    run.results.append_round(record)
    state = {
        "config": run.flat_config,
        "run-key": run.run_key,
        "strategy": run.strategy.state_info(),
        "replays": run.screen.replays.accepted,
        "num-partitions": run.partitions.num_partitions,
        **run.clock.state(),
    }
    checkpoint = Checkpoint(server_round, run.strategy.state_tensors(), state)
    save_checkpoint(run.results.folder, checkpoint, keep=run.config.server.keep_checkpoints)
    published = run.results.published(record)
    run.tracking.round(published)  # after the checkpoint: never a round the run will do again
    run.round_times.add(published)
    rounds = run.config.num_server_rounds
    left = run.round_times.left(rounds - server_round)
    log(INFO, "%s", round_line(published, rounds, left))


def _clients(run: Run, training: Training, evaluation: Evaluation) -> dict[int, ClientRound]:
    """Every node's part in the round: training, evaluation, or both."""
    clients, ex = training.clients, evaluation.exchange
    for node in {*ex.bytes_down, *evaluation.verdicts} - set(clients):  # asked to evaluate only
        clients[node] = ClientRound(node, EVALUATED_ONLY, run.partitions.of.get(node))
    for node, n in ex.bytes_down.items():
        clients[node].bytes_down += n
    for node, n in ex.bytes_up.items():
        clients[node].bytes_up += n
    for node, verdict in evaluation.verdicts.items():
        clients[node].eval_status = verdict
    return clients


def _record(
    run: Run, server_round: int, training: Training, evaluation: Evaluation, started: float
) -> dict[str, Any]:
    clients = _clients(run, training, evaluation)
    train_ex, eval_ex, verdicts = training.exchange, evaluation.exchange, evaluation.verdicts
    train_metrics, eval_metrics = training.metrics, evaluation.metrics
    record: dict[str, Any] = {
        "round": server_round,
        "clients_sampled": len(train_ex.bytes_down),
        "clients_accepted": len(training.valid),
        "evaluations_rejected": sum(v.startswith("rejected") for v in verdicts.values()),
        **round_counts((c.status for c in clients.values()), verdicts.values()),
        "train_loss": train_metrics.get(keys.TRAIN_LOSS) if train_metrics else None,
        "held_out_loss": float(eval_metrics[keys.EVAL_LOSS]) if eval_metrics else None,
        **{
            f"held_out_{name.removeprefix('eval-').replace('-', '_')}": float(value)
            for name, value in (eval_metrics or {}).items()
            if name in _HELD_OUT_METRICS
        },
        **prefixed("test", evaluation.test),
        **{f"test_{name}": value for name, value in evaluation.generated.items()},
        "train_bytes_down": sum(train_ex.bytes_down.values()),
        "train_bytes_up": sum(train_ex.bytes_up.values()),
        "eval_bytes_down": sum(eval_ex.bytes_down.values()),
        "eval_bytes_up": sum(eval_ex.bytes_up.values()),
        "aggregation_seconds": training.aggregation_seconds,
        "test_seconds": evaluation.test_seconds,
        "round_seconds": time.perf_counter() - started,
        "clients": [vars(c) for c in sorted(clients.values(), key=_partition_order)],
    }
    if training.clock is not None:
        record["simulation"] = training.clock.record()
    if training.stages is not None:
        record["secagg_stages"] = training.stages
    if training.retried:
        record["retried"] = training.retried
    if evaluation.stages is not None:
        record["secagg_evaluation_stages"] = evaluation.stages
    record.update(run.strategy.round_report())
    record["bytes_down"] = record["train_bytes_down"] + record["eval_bytes_down"]
    record["bytes_up"] = record["train_bytes_up"] + record["eval_bytes_up"]
    return record


def _partition_order(client: ClientRound) -> tuple[float, int]:
    partition = client.partition_id
    return (float("inf") if partition is None else partition), client.node_id


def round_line(record: Mapping[str, Any], rounds: int, left: float | None = None) -> str:
    """The round's progress line, from what the run publishes about it; ``left``: the
    estimated seconds the run has left."""

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
    if left is not None:
        line += f" | about {duration(left)} left"
    return line


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB"
