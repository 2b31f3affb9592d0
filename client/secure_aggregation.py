"""A client's side of SecAgg+, one handler per stage of the protocol.

1. ``setup``: make three key pairs (to agree masks, to encrypt shares, to sign), send the
   public halves.
2. ``share_keys``: check the sharing group and threshold against this client's own run config,
   draw the private mask seed b, Shamir-share b and the mask secret key among the group, and
   send each neighbour its shares encrypted under the key agreed with it.
3. ``collect``: keep the shares received, train as usual, and send the update only as a masked
   vector of integers (with its weight and statistics, inside the same mask), plus what may
   travel in the clear; or, for the round's evaluation, evaluate and mask the statistics.
4. ``consistency``: sign the set of survivors the server announces (Bell et al. 2020's check).
5. ``unmask``: only when at least the threshold of this client's group signed the very same
   survivor set: for each survivor of the group its share of b, for each neighbour that dropped
   out after sharing its share of the mask secret key. Never both for one client, since the
   survivor set is one, signed, and this stage runs once (``client.secagg_session``).

The update is the client's move away from the global model it received: its trained tensors
minus those it was sent (for fedsa-lora, the shared A), or for zeroth-order training its steps
summed per seed.
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
from client.secagg_session import current_round, erase, stage
from federated.config import RunConfig, parse_run_config
from federated.privacy.distributed_noise import planned_min_clients, run_plan
from federated.privacy.secret_randomness import secret_numpy_generator
from federated.protocol import message_keys as keys
from federated.protocol.reply_contract import MASKED, MASKED_CLEAR_METRICS, train_metric_keys
from federated.protocol.wire import record_to_tensors
from federated.secagg import protocol as p
from federated.secagg.distributed_dp import noised_vector
from federated.secagg.keys import agree, new_key_pair, new_signing_pair, sign, signed_by, threshold
from federated.secagg.masking import mask
from federated.secagg.metric_sums import encode_metrics, statistics

TrainHandler = Callable[[Message, Context], Message]


def _reply(msg: Message, values: dict) -> Message:
    return Message(RecordDict({p.CONFIG: ConfigRecord(values)}), reply_to=msg)


def _nodes(values: object, what: str) -> list[int]:
    nodes = [int(n) for n in values]  # type: ignore[attr-defined]
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"the {what} name a node twice")
    return nodes


def _setup(msg: Message, context: Context, state: ConfigRecord) -> Message:
    state[p.SK_MASK], pk_mask = new_key_pair()
    state[p.SK_ENCRYPT], pk_encrypt = new_key_pair()
    state[p.SK_SIGN], pk_sign = new_signing_pair()
    return _reply(msg, {p.PK_MASK: pk_mask, p.PK_ENCRYPT: pk_encrypt, p.PK_SIGN: pk_sign})


def _share_keys(msg: Message, context: Context, state: ConfigRecord) -> Message:
    config, me = msg.content.config_records[p.CONFIG], context.node_id
    run = parse_run_config(context.run_config)
    group = _nodes(config[p.NODES], "sharing group")
    if me not in group:
        raise ValueError("this node is not in the sharing group it was sent")
    smallest = run.secagg.min_group_size
    if len(group) < smallest:
        raise ValueError(
            f"a sharing group of {len(group)}; this node joins groups of at least {smallest} "
            "(secagg.min-group-size)"
        )
    _check_enough("in the sharing group", len(group), run)
    keys_of = {
        name: [bytes(k) for k in config[name]] for name in (p.PK_MASKS, p.PK_ENCRYPTS, p.PK_SIGNS)
    }
    for name, listed in keys_of.items():
        if len(listed) != len(group) or len(set(listed)) != len(listed):
            raise ValueError(f"{name}: one distinct key per member of the group is needed")
    own = threshold(len(group), run.secagg.reconstruction_threshold)
    t = int(config[p.THRESHOLD])
    if not own <= t <= len(group):
        raise ValueError(
            f"threshold {t} for a group of {len(group)}: this node's own run config asks for "
            f"{own} to {len(group)} (secagg.reconstruction-threshold, always above half)"
        )
    state[p.NODES], state[p.THRESHOLD] = group, t
    for name, listed in keys_of.items():
        state[name] = listed
    seed = os.urandom(32)
    state[p.SEED] = seed
    seed_shares = create_shares(seed, t, len(group))
    key_shares = create_shares(state[p.SK_MASK], t, len(group))
    destinations, ciphertexts = [], []
    received_b, received_sk = {}, {}
    for node, pk_encrypt, b_share, sk_share in zip(
        group, keys_of[p.PK_ENCRYPTS], seed_shares, key_shares, strict=True
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


def _held_shares(state: ConfigRecord) -> tuple[dict[int, bytes], dict[int, bytes]]:
    owners = [int(n) for n in state[p.SHARE_OWNERS]]
    b = dict(zip(owners, state[p.SEED_SHARES], strict=True))
    return b, dict(zip(owners, state[p.KEY_SHARES], strict=True))


def _collect(
    msg: Message, context: Context, state: ConfigRecord, train: TrainHandler, evaluate: TrainHandler
) -> Message:
    config, me = msg.content.config_records[p.CONFIG], context.node_id
    group = [int(n) for n in state[p.NODES]]
    b, sk = _held_shares(state)
    encrypt_keys = dict(zip(group, state[p.PK_ENCRYPTS], strict=True))
    sources = _nodes(config[p.SOURCES], "forwarded shares")
    if not set(sources) <= set(group) - {me}:
        raise ValueError("shares were forwarded from nodes outside this node's group")
    for source, ciphertext in zip(sources, config[p.CIPHERTEXTS], strict=True):
        plaintext = decrypt(agree(state[p.SK_ENCRYPT], encrypt_keys[source]), ciphertext)
        src, dst, b_share, sk_share = share_keys_plaintext_separate(plaintext)
        if (src, dst) != (source, me):
            raise ValueError(f"a share from node {src} to {dst} was forwarded as {source} to {me}")
        b[source], sk[source] = b_share, sk_share
    run = parse_run_config(context.run_config)
    t = int(state[p.THRESHOLD])
    if len(sources) + 1 < t:
        raise ValueError(f"{len(sources) + 1} of the group shared; unmasking needs {t}")
    _check_enough("whose shares arrived", len(sources) + 1, run)
    _keep_shares(state, b, sk)
    state[p.SOURCES] = sources
    purpose = config[p.PURPOSE]
    if purpose not in (p.TRAIN, p.EVALUATE):
        raise ValueError(f"a collect stage to {purpose!r}; this node trains or evaluates")
    reply = (train if purpose == p.TRAIN else evaluate)(msg, context)
    if reply.has_error() or keys.METRICS not in reply.content.metric_records:
        erase(state)  # failed: nothing to mask, no later stage
        return reply
    metrics = reply.content.metric_records[keys.METRICS]
    if purpose == p.EVALUATE:
        quantized, released = _evaluation_vector(metrics, config), MetricRecord({})
    elif keys.ARRAYS not in reply.content.array_records:
        erase(state)  # declined (its privacy budget): says so in the clear, masks nothing
        return reply
    else:
        quantized = _update_vector(msg, reply, run, config)
        released = _released_metrics(metrics, run)
    pk_masks = dict(zip(group, state[p.PK_MASKS], strict=True))
    pair_keys = {n: agree(state[p.SK_MASK], pk_masks[n]) for n in sources}
    masked = mask(quantized, state[p.SEED], pair_keys, me)
    content = RecordDict(
        {keys.ARRAYS: ArrayRecord({p.MASKED: Array(masked)}), keys.METRICS: released}
    )
    return Message(content, reply_to=msg)


def _update_vector(
    msg: Message, reply: Message, run: RunConfig, config: ConfigRecord
) -> np.ndarray:
    """The integers a training client masks: its quantized update and weight, its statistics."""
    received = record_to_tensors(msg.content.array_records[keys.ARRAYS])
    upload = record_to_tensors(reply.content.array_records[keys.ARRAYS])
    metrics = reply.content.metric_records[keys.METRICS]
    if run.dp.distributed_noise:
        return _noised(p.update_delta(received, upload, config), run, msg)
    vector, bit = p.update_vector(received, upload, metrics, config)
    names = p.train_statistics(run)
    entries = encode_metrics(metrics, vector[0], names) if names else None
    return p.quantized_vector(vector, bit, config, entries)


def _evaluation_vector(metrics: MetricRecord, config: ConfigRecord) -> np.ndarray:
    """The integers an evaluating client masks: its quantized weight, its held-out statistics."""
    largest = float(config[p.MAX_WEIGHT])
    weight = min(float(metrics[keys.NUM_EXAMPLES]), largest) / largest
    entries = encode_metrics(metrics, weight, statistics(metrics))
    return p.quantized_vector(np.array([weight]), None, config, entries)


def _check_enough(which: str, count: int, run: RunConfig) -> None:
    """Distributed DP: refuse any stage that would leave a sum of fewer clients than the noise
    was sized for (each client sized its share for that many)."""
    fewest = planned_min_clients(run) if run.dp.distributed_noise else 0
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
    """What travels in the clear beside the masked vector: under record-level DP the client's
    DP releases (its noised count, its epsilon); otherwise only what the server planned (its
    partition, its rank). Its record count, loss, steps, time and memory are exact functions
    of its data: they travel inside the mask, or under client-level DP not at all."""
    if run.dp.record_level:
        return metrics
    values = {k: metrics[k] for k in MASKED_CLEAR_METRICS if k in metrics}
    return contracted(values, train_metric_keys(run.mode, MASKED))


def _consistency(msg: Message, context: Context, state: ConfigRecord) -> Message:
    config, me = msg.content.config_records[p.CONFIG], context.node_id
    survivors = _nodes(config[p.SURVIVORS], "survivors")
    if me not in survivors:
        raise ValueError("this node is not among the survivors it was sent")
    present = {int(n) for n in state[p.SOURCES]} | {me}
    in_group = set(survivors) & {int(n) for n in state[p.NODES]}
    if not in_group <= present:
        raise ValueError(
            f"survivors {sorted(in_group - present)[:3]} of this node's group never sent it "
            "their shares"
        )
    t = int(state[p.THRESHOLD])
    if len(in_group) < t:
        raise ValueError(f"{len(in_group)} of this node's group survived; unmasking needs {t}")
    _check_enough("survived in the group", len(in_group), parse_run_config(context.run_config))
    state[p.SURVIVORS] = sorted(survivors)
    statement = p.survivor_statement(current_round(state), survivors)
    return _reply(msg, {p.SIGNATURE: sign(state[p.SK_SIGN], statement)})


def _unmask(msg: Message, context: Context, state: ConfigRecord) -> Message:
    config, me = msg.content.config_records[p.CONFIG], context.node_id
    group = [int(n) for n in state[p.NODES]]
    survivors = {int(n) for n in state[p.SURVIVORS]}
    verifying = dict(zip(group, state[p.PK_SIGNS], strict=True))
    statement = p.survivor_statement(current_round(state), sorted(survivors))
    agreed = {me}
    signers = _nodes(config[p.SIGNERS], "signers")
    for signer, signature in zip(signers, config[p.SIGNATURES], strict=True):
        if signer not in verifying or signer not in survivors or signer == me:
            continue  # no key to check it with, or no survivor: it vouches for nothing here
        if not signed_by(verifying[signer], statement, bytes(signature)):
            raise ValueError(
                f"node {signer}'s signature is not on the survivor set this node signed: the "
                "server told the clients different survivors, or forged a signature"
            )
        agreed.add(signer)
    t = int(state[p.THRESHOLD])
    if len(agreed) < t:
        raise ValueError(f"{len(agreed)} of this node's group signed the survivors; it needs {t}")
    b, sk = _held_shares(state)
    present = [int(n) for n in state[p.SOURCES]]
    active = [n for n in [me, *present] if n in survivors]
    dropped = [n for n in present if n not in survivors]
    nodes = active + dropped
    shares = [b[n] for n in active] + [sk[n] for n in dropped]
    return _reply(msg, {p.SHARE_OWNERS: nodes, p.SHARES: shares})


setup = stage(p.SETUP, _setup)
share_keys = stage(p.SHARE_KEYS, _share_keys)
consistency = stage(p.CONSISTENCY, _consistency)
unmask = stage(p.UNMASK, _unmask)


def collect_with(
    train: TrainHandler, evaluate: TrainHandler
) -> Callable[[Message, Context], Message]:
    """The collect stage around the ClientApp's ``train`` and ``evaluate`` handlers."""
    return stage(
        p.COLLECT, lambda msg, context, state: _collect(msg, context, state, train, evaluate)
    )
