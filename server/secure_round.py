"""A training round under SecAgg+: five exchanges, and the server learns only the sum.

1. setup: every sampled client sends three public keys (masks, encryption, signatures).
2. share keys: each gets the public keys of its sharing group and sends back its secret shares,
   encrypted for each neighbour; the server only forwards them.
3. collect: each gets the round's training message plus the shares addressed to it, trains, and
   sends its update masked. The masked vectors are summed modulo 2^32.
4. consistency: the survivors (whose masked vectors are in the sum) each sign the survivor set.
5. unmask: each survivor gets its group's signatures and, when enough of them are on the set it
   signed, sends shares to remove the survivors' private masks and the pairwise masks of clients
   that dropped out after sharing. Below the threshold of shares the round has no sum and the
   global model stays as it was.

Every try at a round has its own identity (the message group ``<round>.<try>``): a client takes
each stage of a round once, in order (``client.secagg_session``), so a retried round starts
afresh. With distributed DP (``strategies.distributed_dp``) the clients' vectors already carry
the noise: a sample too large for the field, or survivors fewer than the noise was sized for,
end the round before anything is unmasked. The round's bytes are counted per node over all
exchanges.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import WARNING

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.serverapp import Grid

from federated.config import RunConfig
from federated.protocol import message_keys as keys
from federated.protocol.reply_contract import eval_metric_keys, train_metric_keys, train_release
from federated.secagg import protocol as p
from federated.secagg.distributed_dp import decode_sum
from federated.secagg.keys import agree, neighbours, signed_by, threshold
from federated.secagg.masking import MOD, sum_masked, unmask
from federated.secagg.metric_sums import MAX_CLIENTS, statistics
from server.exchange import Exchange, exchange
from server.reply_validation import check_masked_reply
from server.sum_checks import (
    distributed_problem,
    honest_bounds,
    integer_problem,
    masked_sum_problem,
)
from strategies.distributed_dp import secure_layout
from strategies.strategy_wrapper import Strategy

Progress = Callable[[str], Callable[[int, int], None]]


@dataclass
class SecureOutcome:
    """The collect stage's replies (for the usual bookkeeping) and what the sum gave."""

    exchange: Exchange
    rejected: dict[int, str] = field(default_factory=dict)  # node -> why it is not in the sum
    failure: str | None = None  # why the round has no sum
    metrics: MetricRecord | None = None
    aggregation_seconds: float = 0.0  # summing, unmasking and moving the model (no waiting)
    # Per stage: bytes down and up over all its nodes, and its seconds (what each stage costs).
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    def check(self, reply: Message) -> str | None:
        """The collect-stage verdict on a reply, for the round's bookkeeping."""
        return self.rejected.get(reply.metadata.src_node_id)


class _NoSum(Exception):
    """The round ends without a sum, for this reason."""


def _merge(total: Exchange, part: Exchange) -> None:
    for node, n in part.bytes_down.items():
        total.bytes_down[node] = total.bytes_down.get(node, 0) + n
    for node, n in part.bytes_up.items():
        total.bytes_up[node] = total.bytes_up.get(node, 0) + n


def _ok(ex: Exchange) -> dict[int, Message]:
    return {r.metadata.src_node_id: r for r in ex.replies if not r.has_error()}


class _SecureRound:
    """One try at a round's SecAgg+ exchanges, stage by stage."""

    def __init__(
        self,
        grid: Grid,
        strategy: Strategy,
        config: RunConfig,
        group_id: str,
        progress: Progress,
        purpose: str = p.TRAIN,
    ) -> None:
        self.grid, self.strategy, self.config = grid, strategy, config
        self.group_id, self.progress, self.purpose = group_id, progress, purpose
        self.total = Exchange()
        self.stages: dict[str, dict[str, float]] = {}
        self.clip_bound = strategy.clip_bound  # None: the clients do not clip
        self.distributed = strategy.distributed_plan  # None: the clients add no noise
        if purpose == p.EVALUATE:  # statistics only: the held-out ones
            names = eval_metric_keys(config.task, strategy.eval_payload().plan.keep_b)
            self.shape = p.VectorLayout([], False, statistics(names))
            self.required: frozenset[str] = frozenset()
        else:
            count_bit = self.clip_bound is not None and config.dp.client.adaptive_clip
            spec = secure_layout(strategy, config)
            self.shape = p.VectorLayout(spec, count_bit, p.train_statistics(config))
            self.required = train_metric_keys(config.mode, train_release(config))

    def _run(self, action: str, messages: list[Message]) -> Exchange:
        started = time.perf_counter()
        ex = exchange(
            self.grid,
            messages,
            timeout=self.config.server.round_timeout,
            on_reply=self.progress(action),
        )
        _merge(self.total, ex)
        self.stages[action.removeprefix("secagg_")] = {
            "bytes_down": sum(ex.bytes_down.values()),
            "bytes_up": sum(ex.bytes_up.values()),
            "seconds": time.perf_counter() - started,
        }
        return ex

    def _message(self, node: int, action: str, content: RecordDict) -> Message:
        return Message(
            content=content,
            dst_node_id=node,
            message_type=f"train.{action}",
            group_id=self.group_id,
        )

    def _ask(self, action: str, values: dict[int, dict]) -> dict[int, Message]:
        """Send each node its config record for ``action``; its sound replies by node."""
        messages = [
            self._message(n, action, RecordDict({p.CONFIG: ConfigRecord(v)}))
            for n, v in values.items()
        ]
        return _ok(self._run(action, messages))

    def keys(self, nodes: list[int]) -> None:
        """Setup and share keys: who holds whose shares, and the threshold."""
        s = self.config.secagg
        if self.shape.statistics and len(nodes) > MAX_CLIENTS:
            raise _NoSum(f"{len(nodes)} clients sampled; the masked statistics hold {MAX_CLIENTS}")
        fits = (MOD - 1) // ((1 << s.quantization_bits) - 1)  # honest sums must not wrap
        if self.distributed is None and len(nodes) > fits:
            raise _NoSum(
                f"{len(nodes)} clients sampled; sums of entries of {s.quantization_bits} bits "
                f"hold {fits} (lower secagg.quantization-bits)"
            )
        setup = self._ask(p.SETUP, {n: {} for n in nodes})
        self.public = {n: r.content.config_records[p.CONFIG] for n, r in setup.items()}
        if len(self.public) < s.min_group_size:
            raise _NoSum(
                f"{len(self.public)} clients finished setup; secagg.min-group-size is "
                f"{s.min_group_size}"
            )
        self.groups = neighbours(list(self.public), s.num_shares)
        size = len(next(iter(self.groups.values())))
        if size < s.min_group_size:
            raise _NoSum(f"sharing groups of {size}; secagg.min-group-size is {s.min_group_size}")
        self.threshold = threshold(size, s.reconstruction_threshold)
        shared = self._ask(p.SHARE_KEYS, {n: self._share_values(n) for n in self.groups})
        self.shared = set(shared)
        self.forward: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        for source, reply in shared.items():
            record = reply.content.config_records[p.CONFIG]
            for dest, cipher in zip(record[p.DESTINATIONS], record[p.CIPHERTEXTS], strict=True):
                if int(dest) in shared:
                    self.forward[int(dest)].append((source, cipher))

    def _share_values(self, node: int) -> dict:
        """The share-keys stage's record for ``node``: its group's public keys."""
        group = self.groups[node]
        listed = ((p.PK_MASKS, p.PK_MASK), (p.PK_ENCRYPTS, p.PK_ENCRYPT), (p.PK_SIGNS, p.PK_SIGN))
        return {
            p.NODES: group,
            **{name: [self.public[n][key] for n in group] for name, key in listed},
            p.THRESHOLD: self.threshold,
        }

    def _collect_message(self, node: int, content: RecordDict) -> Message:
        """The collect stage's message to ``node``: the round's ``content``, how to mask, and
        the shares its neighbours encrypted for it."""
        s = self.config.secagg
        content = RecordDict(dict(content))
        content[p.CONFIG] = ConfigRecord(
            {
                p.CLIPPING_RANGE: s.clipping_range,
                p.BITS: s.quantization_bits,
                p.MAX_WEIGHT: s.max_weight,
                p.CLIP_NORM: self.clip_bound or 0.0,
                p.COUNT_BIT: self.shape.count_bit,
                p.POOL_SIZE: self.config.zo.pool_size,
                p.PURPOSE: self.purpose,
                p.SOURCES: [src for src, _ in self.forward[node]],
                p.CIPHERTEXTS: [c for _, c in self.forward[node]],
            }
        )
        return self._message(node, p.COLLECT, content)

    def collect(self, contents: dict[int, RecordDict], outcome: SecureOutcome) -> list[Message]:
        """Train (or evaluate) and collect the masked vectors; the sound ones, whose senders
        survive."""
        # One order every run.
        messages = [self._collect_message(n, contents[n]) for n in sorted(self.shared)]
        outcome.exchange = self._run(p.COLLECT, messages)
        summed = []
        for reply in outcome.exchange.replies:
            reason = check_masked_reply(reply, self.shape.size, self.required)
            if reason is None:
                summed.append(reply)
            else:
                outcome.rejected[reply.metadata.src_node_id] = reason
        survivors = {r.metadata.src_node_id for r in summed}
        if len(survivors) < self.threshold:
            raise _NoSum(
                f"{len(survivors)} masked updates arrived; the threshold is {self.threshold}"
            )
        planned = self.distributed.min_clients if self.distributed else 0
        if len(survivors) < planned:
            raise _NoSum(
                f"{len(survivors)} masked updates arrived; distributed DP's noise needs "
                f"{planned} (dp.distributed.dropout)"
            )
        return summed

    def signatures(self, survivors: set[int]) -> dict[int, bytes]:
        """The consistency stage: each survivor's signature on the survivor set, those that
        verify (a forged one would make every honest neighbour refuse to unmask)."""
        replies = self._ask(p.CONSISTENCY, {n: {p.SURVIVORS: sorted(survivors)} for n in survivors})
        good = {}
        for node, reply in replies.items():
            identity = p.round_identity(reply.metadata.run_id, self.group_id)
            statement = p.survivor_statement(identity, sorted(survivors))
            signature = reply.content.config_records.get(p.CONFIG, {}).get(p.SIGNATURE)
            if isinstance(signature, bytes) and signed_by(
                self.public[node][p.PK_SIGN], statement, signature
            ):
                good[node] = signature
            else:
                log(WARNING, "    node %d did not sign the survivor set; it is left out", node)
        return good

    def shares(self, signed: dict[int, bytes]) -> dict[int, list[bytes]]:
        """The unmask stage: every signer gets its group's signatures, and answers with its
        shares; the shares by the node they belong to."""
        values = {}
        for node in signed:
            signers = [n for n in self.groups[node] if n in signed]
            values[node] = {p.SIGNERS: signers, p.SIGNATURES: [signed[n] for n in signers]}
        return _shares_by_owner(self._ask(p.UNMASK, values))

    def unmasked(self, masked_sum, survivors: set[int], shares: dict[int, list[bytes]]):
        """The sum of the survivors' vectors, their masks removed."""
        dropped = self.shared - survivors
        short = [n for n in survivors | dropped if len(shares[n]) < self.threshold]
        if short:
            raise _NoSum(f"too few shares to unmask nodes {short[:3]} (threshold {self.threshold})")
        try:
            seeds = [combine_shares(shares[n]) for n in survivors]
            orphans = []
            for gone in dropped:
                secret = combine_shares(shares[gone])
                for node in set(self.groups[gone]) & survivors:
                    orphans.append((node, gone, agree(secret, self.public[node][p.PK_MASK])))
        except (ValueError, TypeError) as err:
            raise _NoSum(f"the shares do not rebuild the secrets ({err})") from None
        return unmask(masked_sum, seeds, orphans)

    def run(
        self, contents: dict[int, RecordDict], outcome: SecureOutcome, server_round: int
    ) -> tuple[np.ndarray, list[Message]]:
        """Every stage: the unmasked sum of the survivors' vectors and their collect replies."""
        self.keys(list(contents))
        summed = self.collect(contents, outcome)
        survivors = {r.metadata.src_node_id for r in summed}
        started = time.perf_counter()
        masked_sum = sum_masked(
            (r.content.array_records[keys.ARRAYS][p.MASKED].numpy() for r in summed),
            self.shape.size,
        )
        outcome.aggregation_seconds += time.perf_counter() - started
        signed = self.signatures(survivors)
        if self.purpose == p.TRAIN:  # the shares asked for next may reveal the sum
            self.strategy.sum_may_be_revealed(server_round)
        shares = self.shares(signed)
        started = time.perf_counter()
        total = self.unmasked(masked_sum, survivors, shares)
        outcome.aggregation_seconds += time.perf_counter() - started
        return total, summed

    def aggregate(self, total: np.ndarray, summed: list[Message], server_round: int):
        """Move the model by the unmasked sum, once it is one that honest clients can make; the
        round's statistics from it."""
        count, plan, strategy = len(summed), self.distributed, self.strategy
        if plan is not None:
            counted, sums = decode_sum(total, self.shape.spec, plan)
            if counted != count:
                raise _NoSum(f"the sum counts {counted} clients; {count} were summed")
            if counted > 4 * plan.min_clients:
                log(
                    WARNING,
                    "    distributed DP: %d clients in the sum, each with noise sized for %d: "
                    "the sum carries %.2gx the planned noise; set strategy.min-available-nodes "
                    "to the nodes the run has",
                    counted,
                    plan.min_clients,
                    (counted / plan.min_clients) ** 0.5,
                )
            if problem := distributed_problem(sums, counted, plan):
                raise _NoSum(_tampered(count, problem))
            return strategy.aggregate_secure(summed, sums, float(counted), None, {})
        s = self.config.secagg
        parts = p.split_sum(total, self.shape, s.clipping_range, s.quantization_bits, count)
        bounds = honest_bounds(strategy, self.config, server_round)
        if problem := masked_sum_problem(total, parts, self.shape, count, self.config, bounds):
            raise _NoSum(_tampered(count, problem))
        centred = None if parts.unclipped is None else parts.unclipped - count / 2
        return strategy.aggregate_secure(
            summed, parts.tensors, parts.weight, centred, parts.metrics
        )

    def evaluation(self, total: np.ndarray, summed: list[Message]) -> MetricRecord | None:
        """The held-out statistics from the unmasked sum, once honest clients can make it."""
        s, count = self.config.secagg, len(summed)
        if problem := integer_problem(total, self.shape, count, s.quantization_bits, False):
            raise _NoSum(_tampered(count, problem))
        parts = p.split_sum(total, self.shape, s.clipping_range, s.quantization_bits, count)
        return self.strategy.aggregate_secure_evaluation(summed, parts.metrics)

    def finish(self, outcome: SecureOutcome) -> SecureOutcome:
        """``outcome`` with the bytes and seconds of every stage."""
        collected = outcome.exchange
        collected.bytes_down, collected.bytes_up = self.total.bytes_down, self.total.bytes_up
        outcome.stages = self.stages
        return outcome


def secure_train_round(
    grid: Grid,
    sent: list[Message],
    strategy: Strategy,
    config: RunConfig,
    round_try: tuple[int, int],
    progress: Progress,
) -> SecureOutcome:
    """Run try ``round_try`` = (round, try) of a round's training under SecAgg+ and move the
    strategy's model by the mean update."""
    server_round, attempt = round_try
    secure = _SecureRound(grid, strategy, config, f"{server_round}.{attempt}", progress)
    contents = {m.metadata.dst_node_id: m.content for m in sent}
    outcome = SecureOutcome(exchange=Exchange())
    plan = secure.distributed
    try:
        if plan is not None and len(contents) > plan.max_clients:
            raise _NoSum(
                f"{len(contents)} clients sampled; distributed DP's field holds {plan.max_clients}"
            )
        total, summed = secure.run(contents, outcome, server_round)
        started = time.perf_counter()
        outcome.metrics = secure.aggregate(total, summed, server_round)
        outcome.aggregation_seconds += time.perf_counter() - started
    except _NoSum as why:
        outcome.failure = str(why)
        log(WARNING, "    SecAgg+ round without a sum: %s", why)
        if done := strategy.round_without_sum(server_round):
            log(WARNING, "    %s", done)
    return secure.finish(outcome)


def secure_evaluate_round(
    grid: Grid,
    sent: list[Message],
    strategy: Strategy,
    config: RunConfig,
    server_round: int,
    progress: Progress,
) -> SecureOutcome:
    """The round's evaluation under SecAgg+ (without DP): each client's held-out statistics
    travel masked, the server learns their record count and weighted means."""
    purpose = p.EVALUATE
    secure = _SecureRound(grid, strategy, config, f"{server_round}.{purpose}", progress, purpose)
    outcome = SecureOutcome(exchange=Exchange())
    try:
        contents = {m.metadata.dst_node_id: m.content for m in sent}
        total, summed = secure.run(contents, outcome, server_round)
        outcome.metrics = secure.evaluation(total, summed)
    except _NoSum as why:
        outcome.failure = str(why)
        log(WARNING, "    SecAgg+ evaluation without a sum: %s", why)
    return secure.finish(outcome)


def _tampered(count: int, problem: str) -> str:
    return (
        f"the unmasked sum cannot come from {count} clients that follow the protocol ({problem}): "
        "one of them altered its masked vector; the sum is discarded"
    )


def _shares_by_owner(answered: dict[int, Message]) -> dict[int, list[bytes]]:
    """The unmask replies' shares by the node they belong to; a malformed reply gives none."""
    shares: dict[int, list[bytes]] = defaultdict(list)
    for node, reply in answered.items():
        try:
            record = reply.content.config_records[p.CONFIG]
            pairs = list(zip(record[p.SHARE_OWNERS], record[p.SHARES], strict=True))
            found = [(int(owner), bytes(share)) for owner, share in pairs]
        except (KeyError, ValueError, TypeError) as err:
            log(WARNING, "    node %d sent malformed shares (%s); they are left out", node, err)
            continue
        for owner, share in found:
            shares[owner].append(share)
    return shares
