"""A client's side of SecAgg+, one handler per stage of the protocol.

1. ``setup``: make two key pairs (one to agree masks, one to encrypt shares), send the publics.
2. ``share_keys``: draw the private mask seed b, Shamir-share b and the mask secret key among the
   sharing group, and send each neighbour its shares encrypted under the key agreed with it.
3. ``collect``: keep the shares received, train as usual, and send the update only as a masked
   vector of integers (with its weight, inside the same mask), plus the usual metrics.
4. ``unmask``: for each neighbour that is still there, its share of b; for each that dropped out,
   its share of the mask secret key. Never both for one client.

Secrets stay in the node state between stages. The update is the client's move away from the
global model it received: its trained tensors minus those it was sent (for fedsa-lora, the
shared A), or for zeroth-order training its steps summed per seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.secure_aggregation.crypto.shamir import create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)

from client.node import contracted
from federated import message_keys as keys
from federated.config import RunConfig, parse_run_config
from federated.privacy.distributed_noise import planned_min_clients, run_plan
from federated.privacy.secret_randomness import secret_numpy_generator
from federated.reply_contract import train_metric_keys
from federated.secagg import protocol as p
from federated.secagg.distributed_dp import noised_vector
from federated.secagg.keys import agree, new_key_pair
from federated.secagg.masking import mask
from federated.wire import record_to_tensors

TrainHandler = Callable[[Message, Context], Message]


def _state(context: Context) -> ConfigRecord:
    if p.STATE not in context.state.config_records:
        context.state.config_records[p.STATE] = ConfigRecord({})
    return context.state.config_records[p.STATE]


def _reply(msg: Message, values: dict) -> Message:
    return Message(RecordDict({p.CONFIG: ConfigRecord(values)}), reply_to=msg)


def setup(msg: Message, context: Context) -> Message:
    state = _state(context)
    state.clear()
    state[p.SK_MASK], pk_mask = new_key_pair()
    state[p.SK_ENCRYPT], pk_encrypt = new_key_pair()
    return _reply(msg, {p.PK_MASK: pk_mask, p.PK_ENCRYPT: pk_encrypt})


def share_keys(msg: Message, context: Context) -> Message:
    config, state, me = msg.content.config_records[p.CONFIG], _state(context), context.node_id
    group = [int(n) for n in config[p.NODES]]
    if me not in group:
        raise ValueError("this node is not in the sharing group it was sent")
    if len(set(group)) != len(group):
        raise ValueError("the sharing group names a node twice")
    _check_enough("in the sharing group", len(group), parse_run_config(context.run_config))
    state[p.NODES], state[p.PK_MASKS] = group, list(config[p.PK_MASKS])
    state[p.PK_ENCRYPTS] = list(config[p.PK_ENCRYPTS])
    threshold = int(config[p.THRESHOLD])
    seed = os.urandom(32)
    state[p.SEED] = seed
    seed_shares = create_shares(seed, threshold, len(group))
    key_shares = create_shares(state[p.SK_MASK], threshold, len(group))
    destinations, ciphertexts = [], []
    received_b, received_sk = {}, {}
    for node, pk_encrypt, b_share, sk_share in zip(
        group, config[p.PK_ENCRYPTS], seed_shares, key_shares, strict=True
    ):
        if node == me:
            received_b[me], received_sk[me] = b_share, sk_share
            continue
        plaintext = share_keys_plaintext_concat(me, node, b_share, sk_share)
        destinations.append(node)
        ciphertexts.append(encrypt(agree(state[p.SK_ENCRYPT], pk_encrypt), plaintext))
    _keep_shares(state, received_b, received_sk)
    return _reply(msg, {p.DESTINATIONS: destinations, p.CIPHERTEXTS: ciphertexts})


def _keep_shares(state: ConfigRecord, b: dict[int, bytes], sk: dict[int, bytes]) -> None:
    state[p.SHARE_OWNERS] = list(b)
    state[p.SEED_SHARES] = [b[n] for n in b]
    state[p.KEY_SHARES] = [sk[n] for n in b]


def collect(msg: Message, context: Context, train: TrainHandler) -> Message:
    config, state, me = msg.content.config_records[p.CONFIG], _state(context), context.node_id
    group = [int(n) for n in state[p.NODES]]
    owners = [int(n) for n in state[p.SHARE_OWNERS]]
    b = dict(zip(owners, state[p.SEED_SHARES], strict=True))
    sk = dict(zip(owners, state[p.KEY_SHARES], strict=True))
    pk_masks = dict(zip(group, state[p.PK_MASKS], strict=True))
    encrypt_keys = dict(zip(group, state[p.PK_ENCRYPTS], strict=True))
    present = []
    for source, ciphertext in zip(config[p.SOURCES], config[p.CIPHERTEXTS], strict=True):
        source = int(source)
        plaintext = decrypt(agree(state[p.SK_ENCRYPT], encrypt_keys[source]), ciphertext)
        src, dst, b_share, sk_share = share_keys_plaintext_separate(plaintext)
        if (src, dst) != (source, me):
            raise ValueError(f"a share from node {src} to {dst} was forwarded as {source} to {me}")
        b[source], sk[source] = b_share, sk_share
        present.append(source)
    run = parse_run_config(context.run_config)
    _check_enough("whose shares arrived", len(set(present)) + 1, run)
    _keep_shares(state, b, sk)
    reply = train(msg, context)
    if reply.has_error() or keys.ARRAYS not in reply.content.array_records:
        return reply  # declined (privacy budget) or failed: nothing to mask
    received = record_to_tensors(msg.content.array_records[keys.ARRAYS])
    upload = record_to_tensors(reply.content.array_records[keys.ARRAYS])
    if run.dp.distributed:
        quantized = _noised(p.update_delta(received, upload, config), run, msg)
    else:
        vector, bit = p.update_vector(
            received, upload, reply.content.metric_records[keys.METRICS], config
        )
        quantized = p.quantized_vector(vector, bit, config)
    pair_keys = {n: agree(state[p.SK_MASK], pk_masks[n]) for n in present}
    masked = mask(quantized, state[p.SEED], pair_keys, me)
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({p.MASKED: Array(masked)}),
            keys.METRICS: _released_metrics(reply.content.metric_records[keys.METRICS], run),
        }
    )
    return Message(content, reply_to=msg)


def _check_enough(which: str, count: int, run: RunConfig) -> None:
    """Distributed DP: refuse any stage that would leave a sum of fewer clients than the noise
    was sized for (each client sized its share for that many)."""
    fewest = planned_min_clients(run) if run.dp.distributed else 0
    if count < fewest:
        raise ValueError(
            f"{count} clients {which}: a sum of fewer than {fewest} carries less noise than "
            "distributed DP planned; this node does not take part"
        )


def _noised(delta: dict, run: RunConfig, msg: Message) -> np.ndarray:
    """Distributed DP: the update clipped, rounded and noised by this client, planned from the
    run config alone (the server cannot lower the noise)."""
    plan = run_plan(run, sum(t.numel() for t in delta.values()))
    rng = secret_numpy_generator("distributed-dp", msg.metadata.dst_node_id, msg.metadata.group_id)
    return noised_vector(delta, plan, rng)


def _released_metrics(metrics: MetricRecord, run: RunConfig) -> MetricRecord:
    """What travels beside the masked vector: under distributed DP alone, no exact function of
    the client's data (its loss, time, memory, record count: it weighs 1), since the guarantee
    holds against the server."""
    if not run.dp.distributed or run.dp.record_level:
        return metrics
    kept = (keys.PARTITION_ID, keys.TRAIN_STEPS, keys.LORA_RANK)
    values = {k: metrics[k] for k in kept if k in metrics}
    values[keys.NUM_EXAMPLES] = 1.0
    return contracted(values, train_metric_keys(run.mode, private=False, distributed=True))


def unmask(msg: Message, context: Context) -> Message:
    config, state = msg.content.config_records[p.CONFIG], _state(context)
    owners = [int(n) for n in state[p.SHARE_OWNERS]]
    b = dict(zip(owners, state[p.SEED_SHARES], strict=True))
    sk = dict(zip(owners, state[p.KEY_SHARES], strict=True))
    active, dropped = [int(n) for n in config[p.ACTIVE]], [int(n) for n in config[p.DROPPED]]
    if set(active) & set(dropped):
        raise ValueError("a node cannot be both active and dropped: that would reveal its update")
    if len(set(active)) != len(active) or not set(active) | set(dropped) <= set(state[p.NODES]):
        raise ValueError("the active and dropped nodes must be distinct members of the group")
    _check_enough("active", len(active), parse_run_config(context.run_config))
    nodes = [n for n in active if n in b] + [n for n in dropped if n in sk]
    shares = [b[n] for n in active if n in b] + [sk[n] for n in dropped if n in sk]
    return _reply(msg, {p.SHARE_OWNERS: nodes, p.SHARES: shares})
