"""A round's training stage: sample, train, screen the replies and, with enough sound ones,
aggregate them; tried again while a try does not count."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from logging import WARNING

from flwr.app import Message, MetricRecord
from flwr.common import log
from flwr.serverapp import Grid

from federated.checkpoint import kept_before
from server.exchange import Exchange, exchange, progress
from server.reply_screen import ClientRound
from server.run import Run
from server.secure_round import secure_train_round
from server.split_round import is_split, split_train_messages
from server.start_checks import RunFailure
from simulation.driver import RoundClock


@dataclass
class Training:
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


def train_round(grid: Grid, run: Run, server_round: int) -> Training:
    """The round's training, tried again while a try does not count (too few sound replies,
    or under SecAgg+ no usable sum); a ``RunFailure`` when no try of ``server.round-retries``
    counts."""
    tries, retried = run.config.server.round_retries + 1, []
    for attempt in range(1, tries + 1):
        training = _train_try(grid, run, (server_round, attempt))
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
    raise RunFailure(
        f"round {server_round} did not train in {tries} tries ({training.failure}); "
        f"{kept_before(server_round)} (the log above names each client's reply)"
    )


def _train_try(grid: Grid, run: Run, round_try: tuple[int, int]) -> Training:
    """Try ``round_try`` = (round, try) at a round. With the device simulator, only the
    messages whose work counts on its clock are sent."""
    server_round = round_try[0]
    strategy, config, screen = run.strategy, run.config, run.screen
    sent = strategy.training_messages(server_round, grid, run.pool, run.shared)
    clock = None
    if run.devices is not None:
        upload = sum(t.numel() * t.element_size() for t in strategy.reply_reference().values())
        sent, clock = run.devices.schedule(sent, screen.partition_of, server_round, upload)
    if config.secagg.enabled:
        outcome = secure_train_round(grid, sent, strategy, config, round_try, progress)
        valid, clients = screen.screen(outcome.exchange, outcome.check, server_round, masked=True)
        # A round without a sum leaves the model, unless the mechanism released anyway.
        counts = outcome.failure is None or strategy.releases_every_round
        return Training(
            outcome.exchange,
            valid,
            clients,
            outcome.metrics,
            outcome.aggregation_seconds,
            counts,
            stages=outcome.stages,
            failure=outcome.failure,
        )
    check = screen.reply_check(server_round)
    split = None
    if splitting := [m for m in sent if is_split(m, config)]:
        nodes = (server_round, screen.partition_of)
        split = split_train_messages(grid, splitting, run.server_model.split_view, config, nodes)
        sent = [m for m in sent if not is_split(m, config)] + split.finished
        check = split.completing(check, config.wire.dtype)
    train_ex = exchange(grid, sent, timeout=config.server.round_timeout, on_reply=progress("train"))
    if split is not None:  # the exchange's bytes count; who left it answers with why
        for node, count in split.exchange.bytes_down.items():
            train_ex.bytes_down[node] = train_ex.bytes_down.get(node, 0) + count
        for node, count in split.exchange.bytes_up.items():
            train_ex.bytes_up[node] = train_ex.bytes_up.get(node, 0) + count
        train_ex.unreachable.update(split.left)
    valid, clients = screen.screen(train_ex, check, server_round)
    declined = sum(c.status.startswith("declined") for c in clients.values())
    needed = config.strategy.min_train_nodes
    if len(valid) < needed and not strategy.releases_every_round:
        strategy.skip_train(train_ex.replies)
        why = f"{len(valid)} sound replies, strategy.min-train-nodes asks for {needed}"
        counts = len(valid) + declined >= needed
        return Training(train_ex, valid, clients, None, 0.0, counts, clock, failure=why)
    aggregation_started = time.perf_counter()
    _, metrics = strategy.aggregate_train(server_round, valid)
    seconds = time.perf_counter() - aggregation_started
    return Training(train_ex, valid, clients, metrics, seconds, True, clock)
