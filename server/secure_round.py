"""A training round under SecAgg+: four exchanges, and the server learns only the sum.

1. setup: every sampled client sends two public keys.
2. share keys: each gets the public keys of its sharing group and sends back its secret shares,
   encrypted for each neighbour; the server only forwards them.
3. collect: each gets the round's training message plus the shares addressed to it, trains, and
   sends its update masked. The masked vectors are summed modulo 2^32.
4. unmask: the survivors send shares to remove the survivors' private masks and the pairwise
   masks of clients that dropped out after sharing. Below the threshold of shares the round has
   no sum and the global model stays as it was.

With distributed DP (``strategies.distributed_dp``) the clients' vectors already carry the
noise: a sample too large for the field, or survivors fewer than the noise was sized for, end
the round before anything is unmasked.

The round's bytes are counted per node over all four exchanges.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import WARNING

from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common import log
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.serverapp import Grid

from federated import message_keys as keys
from federated.config import RunConfig
from federated.reply_contract import train_metric_keys
from federated.secagg import protocol as p
from federated.secagg.distributed_dp import decode_sum
from federated.secagg.keys import agree, neighbours, threshold
from federated.secagg.masking import sum_masked, unmask
from server.exchange import Exchange, exchange
from server.reply_validation import check_masked_reply
from strategies.distributed_dp import DistributedClientDp, secure_layout
from strategies.lora_strategy import LoraStrategy

Progress = Callable[[str], Callable[[int, int], None]]


@dataclass
class SecureOutcome:
    """The collect stage's replies (for the usual bookkeeping) and what the sum gave."""

    exchange: Exchange
    rejected: dict[int, str] = field(default_factory=dict)  # node -> why it is not in the sum
    failure: str | None = None  # why the round has no sum
    metrics: MetricRecord | None = None
    aggregation_seconds: float = 0.0  # unmasking the sum and moving the model

    def check(self, reply: Message) -> str | None:
        """The collect-stage verdict on a reply, for the round's bookkeeping."""
        return self.rejected.get(reply.metadata.src_node_id)


def _message(node: int, action: str, content: RecordDict, server_round: int) -> Message:
    return Message(
        content=content,
        dst_node_id=node,
        message_type=f"train.{action}",
        group_id=str(server_round),
    )


def _config_message(node: int, action: str, values: dict, server_round: int) -> Message:
    return _message(node, action, RecordDict({p.CONFIG: ConfigRecord(values)}), server_round)


def _merge(total: Exchange, part: Exchange) -> None:
    for node, n in part.bytes_down.items():
        total.bytes_down[node] = total.bytes_down.get(node, 0) + n
    for node, n in part.bytes_up.items():
        total.bytes_up[node] = total.bytes_up.get(node, 0) + n


def _ok(ex: Exchange) -> dict[int, Message]:
    return {r.metadata.src_node_id: r for r in ex.replies if not r.has_error()}


class _Protocol:
    def __init__(self, grid: Grid, config: RunConfig, server_round: int, progress: Progress):
        self.grid, self.config, self.round, self.progress = grid, config, server_round, progress
        self.timeout = config.server.round_timeout
        self.total = Exchange()

    def run(self, action: str, messages: list[Message]) -> Exchange:
        ex = exchange(self.grid, messages, timeout=self.timeout, on_reply=self.progress(action))
        _merge(self.total, ex)
        return ex

    def ask(self, action: str, values: dict[int, dict]) -> dict[int, Message]:
        """Send each node its config record for ``action``; its sound replies by node."""
        messages = [_config_message(n, action, v, self.round) for n, v in values.items()]
        return _ok(self.run(action, messages))


def secure_train_round(
    grid: Grid,
    sent: list[Message],
    strategy: LoraStrategy,
    config: RunConfig,
    server_round: int,
    progress: Progress,
) -> SecureOutcome:
    """Run the round's training under SecAgg+ and move the strategy's model by the mean update."""
    proto = _Protocol(grid, config, server_round, progress)
    s = config.secagg
    contents = {m.metadata.dst_node_id: m.content for m in sent}

    dp = strategy.client_dp
    distributed = dp if isinstance(dp, DistributedClientDp) else None
    if distributed is not None and len(contents) > distributed.plan.max_clients:
        return _without_sum(
            proto, strategy,
            f"{len(contents)} clients sampled; distributed DP's field holds "
            f"{distributed.plan.max_clients}",
        )  # fmt: skip
    setup = proto.ask(p.SETUP, {n: {} for n in contents})
    public = {n: r.content.config_records[p.CONFIG] for n, r in setup.items()}
    groups = neighbours(list(public), s.num_shares) if len(public) >= 3 else {}
    if not groups:
        return _without_sum(
            proto, strategy, f"{len(public)} clients finished setup; SecAgg+ needs 3"
        )
    t = threshold(len(next(iter(groups.values()))), s.reconstruction_threshold)

    def share_values(node: int) -> dict:
        group = groups[node]
        return {
            p.NODES: group,
            p.PK_MASKS: [public[n][p.PK_MASK] for n in group],
            p.PK_ENCRYPTS: [public[n][p.PK_ENCRYPT] for n in group],
            p.THRESHOLD: t,
        }

    shared = proto.ask(p.SHARE_KEYS, {n: share_values(n) for n in groups})
    forward: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for source, reply in shared.items():
        record = reply.content.config_records[p.CONFIG]
        for dest, ciphertext in zip(record[p.DESTINATIONS], record[p.CIPHERTEXTS], strict=True):
            if int(dest) in shared:
                forward[int(dest)].append((source, ciphertext))

    spec = secure_layout(strategy, config)
    count_bit = strategy.client_dp is not None and config.dp.client_adaptive_clip
    collect_values = {
        p.CLIPPING_RANGE: s.clipping_range,
        p.BITS: s.quantization_bits,
        p.MAX_WEIGHT: s.max_weight,
        p.CLIP_NORM: strategy.client_dp.bound if strategy.client_dp else 0.0,
        p.COUNT_BIT: count_bit,
        p.POOL_SIZE: config.zo.pool_size,
    }

    def collect_message(node: int) -> Message:
        content = RecordDict(dict(contents[node]))
        content[p.CONFIG] = ConfigRecord(
            {
                **collect_values,
                p.SOURCES: [src for src, _ in forward[node]],
                p.CIPHERTEXTS: [c for _, c in forward[node]],
            }
        )
        return _message(node, p.COLLECT, content, server_round)

    collected = proto.run(p.COLLECT, [collect_message(n) for n in shared])
    size = p.vector_size(spec, count_bit)
    outcome = SecureOutcome(exchange=collected)
    required = train_metric_keys(
        config.mode, private=config.dp.record_level, distributed=config.dp.distributed
    )
    summed = []
    for reply in collected.replies:
        reason = check_masked_reply(reply, size, required)
        if reason is None:
            summed.append(reply)
        else:
            outcome.rejected[reply.metadata.src_node_id] = reason
    survivors = {r.metadata.src_node_id for r in summed}
    if len(survivors) < t:
        outcome.failure = f"{len(survivors)} masked updates arrived; the threshold is {t}"
        return _finish(proto, strategy, outcome)
    if distributed is not None and len(survivors) < distributed.plan.min_clients:
        outcome.failure = (
            f"{len(survivors)} masked updates arrived; distributed DP's noise needs "
            f"{distributed.plan.min_clients} (dp.distributed-dropout)"
        )
        return _finish(proto, strategy, outcome)

    started = time.perf_counter()
    masked_sum = sum_masked(
        (r.content.array_records[keys.ARRAYS][p.MASKED].numpy() for r in summed), size
    )

    def unmask_values(node: int) -> dict:
        group = set(groups[node]) & set(shared)
        return {
            p.ACTIVE: sorted(group & survivors),
            p.DROPPED: sorted(group - survivors),
        }

    if distributed is not None:  # the shares may reveal the sum: the round counts from here
        distributed.spend_round(server_round)
    answered = proto.ask(p.UNMASK, {n: unmask_values(n) for n in survivors})
    shares = _shares_by_owner(answered)
    dropped = set(shared) - survivors
    short = [n for n in survivors | dropped if len(shares[n]) < t]
    if short:
        outcome.failure = f"too few shares to unmask nodes {short[:3]} (threshold {t})"
        return _finish(proto, strategy, outcome)
    try:
        seeds = [combine_shares(shares[n]) for n in survivors]
        orphans = []
        for gone in dropped:
            secret = combine_shares(shares[gone])
            for node in set(groups[gone]) & survivors:
                orphans.append((node, gone, agree(secret, public[node][p.PK_MASK])))
    except (ValueError, TypeError) as err:
        outcome.failure = f"the shares do not rebuild the secrets ({err})"
        return _finish(proto, strategy, outcome)
    total = unmask(masked_sum, seeds, orphans)
    if distributed is not None:
        count, sums = decode_sum(total, spec, distributed.plan)
        if count != len(survivors):
            outcome.failure = f"the sum counts {count} clients; {len(survivors)} were summed"
            return _finish(proto, strategy, outcome)
        if count > 4 * distributed.plan.min_clients:
            log(
                WARNING,
                "    distributed DP: %d clients in the sum, each with noise sized for %d: the sum "
                "carries %.2gx the planned noise; set strategy.min-available-nodes to the nodes "
                "the run has", count, distributed.plan.min_clients,
                (count / distributed.plan.min_clients) ** 0.5,
            )  # fmt: skip
        weight, centred = float(count), None
    else:
        weight, sums, bits = p.split_sum(
            total, spec, count_bit, s.clipping_range, s.quantization_bits, len(survivors)
        )
        centred = None if bits is None else bits - len(survivors) / 2
    outcome.metrics = strategy.aggregate_secure(summed, sums, weight, centred)
    outcome.aggregation_seconds = time.perf_counter() - started
    return _finish(proto, strategy, outcome)


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


def _without_sum(proto: _Protocol, strategy: LoraStrategy, reason: str) -> SecureOutcome:
    return _finish(proto, strategy, SecureOutcome(exchange=Exchange(), failure=reason))


def _finish(proto: _Protocol, strategy: LoraStrategy, outcome: SecureOutcome) -> SecureOutcome:
    collected = outcome.exchange
    collected.bytes_down, collected.bytes_up = proto.total.bytes_down, proto.total.bytes_up
    if outcome.failure:
        log(WARNING, "    SecAgg+ round without a sum: %s", outcome.failure)
        if isinstance(strategy.client_dp, DistributedClientDp):
            strategy.client_dp.spend_round(proto.round)
            log(WARNING, "    distributed DP: nothing released; the round still counts")
        elif strategy.client_dp is not None:
            # Client-level DP releases every round: the noise alone, as for an empty draw.
            centred = 0.0 if proto.config.dp.client_adaptive_clip else None
            strategy.aggregate_secure([], strategy.zero_delta(), 0.0, centred)
            log(WARNING, "    client-level DP: the round's noise moves the model alone")
    return outcome
