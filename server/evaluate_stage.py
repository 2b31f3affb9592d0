"""A round's evaluation stage: the clients' held-out statistics (masked under SecAgg+; none
from private clients) and the server's test of the new global model."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flwr.app import MetricRecord
from flwr.serverapp import Grid

from federated.model.evaluation import EvalResult
from federated.protocol.reply_contract import eval_metric_keys
from server.exchange import Exchange, exchange, progress
from server.reply_screen import screen_evaluate
from server.run import Run
from server.secure_round import secure_evaluate_round


@dataclass
class Evaluation:
    """What the round's evaluation gave."""

    test: EvalResult  # the server's test of the round's global model
    test_seconds: float
    exchange: Exchange = field(default_factory=Exchange)
    metrics: MetricRecord | None = None  # the clients' aggregated held-out statistics
    verdicts: dict[int, str] = field(default_factory=dict)  # node -> ok, or why not counted
    stages: dict | None = None  # SecAgg+: what each stage cost
    generated: dict[str, float] = field(default_factory=dict)  # eval.generate, last round


def evaluate_round(grid: Grid, run: Run, server_round: int) -> Evaluation:
    """Ask the round's evaluating clients (none under ``dp.quiet_clients``: private clients
    release nothing about held-out data), then test the global model on the server."""
    strategy, config = run.strategy, run.config
    ex, metrics, verdicts, stages = Exchange(), None, {}, None
    sent = []
    # A split device cannot run the whole model to evaluate it.
    if not config.dp.quiet_clients and config.mode != "split":
        sent = strategy.evaluation_messages(server_round, grid, run.pool, run.shared)
    if run.devices is not None:  # nor can a LoRA run's split devices
        split = {p for p in run.partitions.of.values() if run.devices.plan_of(p).mode == "split"}
        sent = [m for m in sent if run.partitions.of.get(m.metadata.dst_node_id) not in split]
    if sent and config.secagg.enabled:  # the held-out statistics travel masked too
        secure = secure_evaluate_round(grid, sent, strategy, config, server_round, progress)
        ex, metrics, stages = secure.exchange, secure.metrics, secure.stages
        verdicts = {
            r.metadata.src_node_id: f"rejected: {why}" if (why := secure.check(r)) else "ok"
            for r in ex.replies
        }
    elif sent:
        ex = exchange(
            grid, sent, timeout=config.server.round_timeout, on_reply=progress("evaluate")
        )
        expected = eval_metric_keys(config.task, strategy.eval_payload().plan.keep_b)
        sound, verdicts = screen_evaluate(ex, expected, config.eval.max_examples, run.partitions.of)
        metrics = strategy.aggregate_evaluate(server_round, sound)
    for node in ex.timed_out:
        verdicts.setdefault(node, "no reply before server.round-timeout")
    for node, reason in ex.unreachable.items():
        verdicts.setdefault(node, reason)
    started = time.perf_counter()
    test = run.server_model.evaluate(strategy.model)
    generated = {}
    if config.eval.generate and server_round == config.num_server_rounds:
        generated = run.server_model.answer_test(strategy.model, run.results.folder)
    seconds = time.perf_counter() - started
    return Evaluation(test, seconds, ex, metrics, verdicts, stages, generated)
