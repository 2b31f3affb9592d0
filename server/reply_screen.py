"""Sorting a round's replies before Flower or a strategy sees them: sound, declined, or rejected
with a reason. Nothing here raises on what a client sent."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging import INFO, WARNING

import torch
from flwr.app import Message, MetricRecord
from flwr.common import log

from federated.config import RunConfig
from federated.protocol import message_keys as keys
from federated.protocol.reply_contract import computed_release, train_metric_keys
from federated.protocol.wire import as_received
from server.exchange import Exchange
from server.replay_guard import ReplayGuard, update_digest
from server.reply_validation import (
    budget_declined,
    check_declined_reply,
    check_evaluate_reply,
    check_seed_reply,
    check_train_reply,
    says_declined,
)
from server.update_bounds import ExampleBound, MoveBound, move_bound
from server.zo_factor_replies import as_factor_reply
from strategies.strategy_wrapper import Strategy

ReplyCheck = Callable[[Message], str | None]


@dataclass
class ClientRound:
    """One node's part in a round, as written to ``metrics.jsonl``."""

    node_id: int
    status: str = "ok"
    partition_id: int | None = None
    lora_rank: int | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    train_loss: float | None = None
    num_examples: int | None = None
    train_seconds: float | None = None
    epsilon: float | None = None  # record-level DP: what the client has spent so far
    eval_status: str | None = None  # evaluated: ok, or rejected with the reason


def _optional(metrics: MetricRecord, key: str) -> float | None:
    """A metric a reply may leave out: a record-level DP client sends no unnoised statistic, a
    SecAgg+ client none of its statistics in the clear."""
    return float(metrics[key]) if key in metrics else None


class TrainScreen:
    """The run's checks on training replies: the contract, the round's bounds, the weight a
    client may claim, and no update accepted twice."""

    def __init__(
        self,
        strategy: Strategy,
        config: RunConfig,
        *,
        examples: ExampleBound | None = None,
        partition_of: Mapping[int, int] | None = None,
        zo_steps: Mapping[int, int] | None = None,
        accepted: Mapping[str, int] | None = None,
    ) -> None:
        """``examples``: the weight each partition may claim (None: unbounded);
        ``partition_of``: what each node said it holds; ``zo_steps``: in a mixed federation,
        the partitions whose devices take zeroth-order steps on the factors, with the most
        steps each may report; ``accepted``: the digests of updates accepted before a resume,
        with their rounds."""
        self.strategy, self.config = strategy, config
        self.private = config.dp.record_level
        self.metric_keys = train_metric_keys(config.mode, computed_release(config))
        self.replays = ReplayGuard(dict(accepted or {}))
        self.examples = examples
        self.partition_of: Mapping[int, int] = {} if partition_of is None else partition_of
        self.zo_steps: Mapping[int, int] = {} if zo_steps is None else zo_steps

    def reply_check(self, server_round: int) -> ReplyCheck:
        """What a sound training reply of this round must be. In a mixed federation a
        zeroth-order reply that passes is turned, in place, into the factors it stands for."""
        config, strategy, metric_keys = self.config, self.strategy, self.metric_keys
        # A step's scalar reaches its seed's total with weight at most 1 / (1 - momentum).
        max_scalar = config.server.max_zo_scalar / (1.0 - config.zo.momentum)
        if strategy.reply_kind == "seed-steps":
            z, steps = config.zo, config.train.local_steps
            # What the reply carries besides its steps: the modules it trains first-order.
            hybrid = {k: v for k, v in strategy.reply_reference().items() if k != keys.SEED_SUMS}
            max_norm = config.server.max_update_norm
            return lambda reply: check_seed_reply(
                reply, z.pool_size, steps, metric_keys, max_scalar, hybrid, max_norm
            )
        reference, payload = strategy.reply_reference(), strategy.train_payload()
        bound = move_bound(config, server_round, payload.plan, strategy.pairs, payload.trainable)
        max_norm, wire = config.server.max_update_norm, config.wire.dtype
        received = as_received(payload.trainable, wire)

        def factors(
            reply: Message,
            move: MoveBound | None = bound,
            wire: str = wire,
            sent: Mapping[str, torch.Tensor] = received,
        ) -> str | None:
            return check_train_reply(
                reply,
                reference,
                max_norm,
                metric_keys,
                allow_lower_rank=strategy.mixed_ranks,
                move=move,
                sent=sent,
                wire=wire,
            )

        if not self.zo_steps:
            return factors
        zo_keys = train_metric_keys("zo", computed_release(config))

        def mixed(reply: Message) -> str | None:
            partition = self.partition_of.get(reply.metadata.src_node_id)
            if partition not in self.zo_steps:
                return factors(reply)
            steps = self.zo_steps[partition]
            problem = check_seed_reply(reply, config.zo.pool_size, steps, zo_keys, max_scalar)
            if problem:
                return problem
            rank = config.lora.rank_of(partition)
            reply.content = as_factor_reply(reply, payload.trainable, rank, config)
            # Zeroth-order steps move weights by their scalars, not by AdamW's bounded steps:
            # server.max-update-norm bounds them. The server rebuilt the factors in float32
            # from its own model.
            return factors(reply, move=None, wire="float32", sent=payload.trainable)

        return mixed

    def _weight_problem(self, node: int, metrics: MetricRecord) -> str | None:
        claimed = metrics[keys.PARTITION_ID]
        if node in self.partition_of and claimed != self.partition_of[node]:
            return f"claims partition {claimed:g}; the node holds {self.partition_of[node]}"
        if self.examples is None:
            return None
        return self.examples.problem(claimed, metrics[keys.NUM_EXAMPLES])

    def screen(
        self, ex: Exchange, check: ReplyCheck, server_round: int, masked: bool = False
    ) -> tuple[list[Message], dict[int, ClientRound]]:
        """The round's sound replies, and every node's entry for the round's record. ``masked``
        replies (SecAgg+) carry their update and weight inside the mask, already summed: only
        ``check`` applies (the weight is capped by ``secagg.max-weight`` on the client)."""
        clients = {node: ClientRound(node, bytes_down=n) for node, n in ex.bytes_down.items()}
        valid = []
        for reply in ex.replies:
            node = reply.metadata.src_node_id
            entry = clients.setdefault(node, ClientRound(node))
            entry.bytes_up = ex.bytes_up[node]
            if self.private and says_declined(reply):
                malformed = check_declined_reply(reply)
                if malformed:
                    _reject(entry, malformed)
                    continue
                refusal = budget_declined(reply)
                entry.status = f"declined: {refusal}"
                entry.epsilon = reply.content.metric_records[keys.METRICS][keys.DP_EPSILON]
                log(INFO, "    node %d did not train: %s", node, refusal)
                continue
            # A replayed update is named as such before it is judged as a stale one; the digest
            # is of what the client sent, before any translation.
            digest = None if masked else update_digest(reply)
            reason = self.replays.problem(digest) or check(reply)
            if reason is None and not masked:
                reason = self._weight_problem(node, reply.content.metric_records[keys.METRICS])
            if reason:
                _reject(entry, reason)
                continue
            metrics = reply.content.metric_records[keys.METRICS]
            self.replays.remember(digest, server_round)
            entry.partition_id = int(metrics[keys.PARTITION_ID])
            entry.lora_rank = int(metrics.get(keys.LORA_RANK, 0)) or None
            entry.train_loss = _optional(metrics, keys.TRAIN_LOSS)
            examples = _optional(metrics, keys.NUM_EXAMPLES)
            entry.num_examples = None if examples is None else int(examples)
            entry.train_seconds = _optional(metrics, keys.TRAIN_SECONDS)
            entry.epsilon = _optional(metrics, keys.DP_EPSILON)
            valid.append(reply)
        for node in ex.timed_out:
            clients[node].status = "no reply before server.round-timeout"
            log(WARNING, "    node %d sent no reply before the timeout", node)
        for node, reason in ex.unreachable.items():
            clients[node].status = reason
            log(WARNING, "    node %d is %s", node, reason)
        for node, partition in self.partition_of.items():
            if node in clients:
                clients[node].partition_id = partition
        return in_partition_order(valid, self.partition_of), clients


def in_partition_order(replies: list[Message], partition_of: Mapping[int, int]) -> list[Message]:
    """``replies`` by their nodes' partitions: a float sum depends on its order, and arrival
    order differs from launch to launch."""

    def position(reply: Message) -> tuple[int, int]:
        node = reply.metadata.src_node_id
        return partition_of.get(node, len(partition_of)), node

    return sorted(replies, key=position)


def _reject(entry: ClientRound, reason: str) -> None:
    entry.status = f"rejected: {reason}"
    log(WARNING, "    rejected the reply of node %d: %s", entry.node_id, reason)


def screen_evaluate(
    ex: Exchange, metric_keys: frozenset[str], max_examples: int, partition_of: Mapping[int, int]
) -> tuple[list[Message], dict[int, str]]:
    """The sound evaluation replies (each claims at most ``max_examples``; 0: no bound), in
    partition order, and every replying node's verdict."""
    valid, verdicts = [], {}
    for reply in ex.replies:
        reason = check_evaluate_reply(reply, metric_keys)
        if reason is None and max_examples:
            claimed = reply.content.metric_records[keys.METRICS][keys.NUM_EXAMPLES]
            if claimed > max_examples:
                reason = f"claims {claimed:g} examples; eval.max-examples is {max_examples}"
        node = reply.metadata.src_node_id
        verdicts[node] = f"rejected: {reason}" if reason else "ok"
        if reason:
            log(WARNING, "    ignored the evaluation of node %d: %s", node, reason)
        else:
            valid.append(reply)
    for node in ex.timed_out:
        verdicts[node] = "no reply before server.round-timeout"
    verdicts.update(ex.unreachable)
    return in_partition_order(valid, partition_of), verdicts
