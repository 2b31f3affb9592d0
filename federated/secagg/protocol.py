"""What SecAgg+ messages carry, and the update vector both sides agree on.

A client's vector is [w, w·Δ, (b), (s)]: its weight w, its update Δ flattened in the order of
``layout``, both inside one mask so that the server learns only Σw and Σw·Δ; with adaptive
client-level clipping an entry b, 1 when Δ was inside the clipping bound and 0 otherwise (the
server learns only Σb); without DP its training statistics s (``metric_sums``), so that the
server learns only their sums. w·Δ is quantized with stochastic rounding; w (in millionths), b
and s travel as integers, so their sums are exact. Without client-level DP, w is the client's
examples over
``secagg.max-weight``; with it, every client weighs 1 and clips its own Δ, because the server
never sees Δ to clip it: to the bound less what rounding can add (``masking.rounding_margin``),
so that the bound still holds after quantization.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ConfigRecord, MetricRecord

from federated.config import RunConfig
from federated.privacy.clipping import clip_update, update_norm
from federated.protocol import message_keys as keys
from federated.protocol.reply_contract import PLAIN, train_metric_keys
from federated.secagg import metric_sums
from federated.secagg.masking import dequantize_sum, quantize, rounding_margin, rounding_problem

# Message types (train.<action>, a Python identifier) of the five stages, in the order a client
# takes them, once each a round; and their records.
SETUP, SHARE_KEYS = "secagg_setup", "secagg_share_keys"
COLLECT, CONSISTENCY, UNMASK = "secagg_collect", "secagg_consistency", "secagg_unmask"
STAGES = (SETUP, SHARE_KEYS, COLLECT, CONSISTENCY, UNMASK)
CONFIG = "secagg"
STATE = "secagg-state"
PK_MASK, PK_ENCRYPT, PK_SIGN = "pk-mask", "pk-encrypt", "pk-sign"
SK_MASK, SK_ENCRYPT, SK_SIGN, SEED = "sk-mask", "sk-encrypt", "sk-sign", "seed"
NODES, PK_MASKS, PK_ENCRYPTS, PK_SIGNS = "nodes", "pk-masks", "pk-encrypts", "pk-signs"
THRESHOLD = "threshold"
DESTINATIONS, SOURCES, CIPHERTEXTS = "destinations", "sources", "ciphertexts"
SHARE_OWNERS, SEED_SHARES, KEY_SHARES = "share-owners", "seed-shares", "key-shares"
SHARES = "shares"
SURVIVORS, SIGNATURE, SIGNERS, SIGNATURES = "survivors", "signature", "signers", "signatures"
MASKED = "masked"
CLIPPING_RANGE, BITS, MAX_WEIGHT = "clipping-range", "bits", "max-weight"
CLIP_NORM, COUNT_BIT, POOL_SIZE = "clip-norm", "count-bit", "pool-size"
# What the collect stage masks: a training update (with its statistics), or held-out statistics.
PURPOSE, TRAIN, EVALUATE = "purpose", "train", "evaluate"


def round_identity(run_id: int, group_id: str) -> str:
    """What names one try at one round's SecAgg+: the run, and the server's group ID for it."""
    return f"{run_id}/{group_id}"


def survivor_statement(identity: str, survivors: list[int]) -> bytes:
    """What a client signs in the consistency stage: the round and the survivors it was told
    about. Equal statements mean the server told both signers the same story."""
    nodes = b"".join(int(n).to_bytes(8, "big") for n in sorted(survivors))
    return b"fedtune-secagg-survivors\0" + identity.encode() + b"\0" + nodes


Layout = list[tuple[str, tuple[int, ...]]]


def layout(reference: Mapping[str, torch.Tensor], sent: Mapping[str, torch.Tensor]) -> Layout:
    """The tensors a client's update covers: what it sends back that it was also sent."""
    return [(name, tuple(reference[name].shape)) for name in sorted(reference) if name in sent]


def update_delta(
    received: Mapping, upload: Mapping, config: ConfigRecord
) -> dict[str, torch.Tensor]:
    """How far a client moved from what it received, in float64 (zeroth-order: per seed)."""
    if keys.SEED_INDICES in upload:  # zeroth-order steps: summed per seed of the pool
        delta = torch.zeros(int(config[POOL_SIZE]), dtype=torch.float64)
        delta.index_add_(0, upload[keys.SEED_INDICES].long(), upload[keys.SEED_SCALARS].double())
        return {keys.SEED_SUMS: delta}
    return {k: upload[k].double() - received[k].double() for k in sorted(upload) if k in received}


def update_vector(
    received: Mapping[str, torch.Tensor],
    upload: Mapping[str, torch.Tensor],
    metrics: MetricRecord,
    config: ConfigRecord,
) -> tuple[np.ndarray, int | None]:
    """[w, w·Δ] of one client in float64, and its bit b (None unless the round counts them)."""
    delta = update_delta(received, upload, config)
    bound = float(config[CLIP_NORM])
    inside = update_norm(delta) <= bound if bound > 0 else True
    if bound > 0:
        entries = sum(t.numel() for t in delta.values())
        clipping_range, bits = float(config[CLIPPING_RANGE]), int(config[BITS])
        problem = rounding_problem(entries, clipping_range, bits, bound, keep=0.0)
        if problem:
            raise ValueError(problem)
        margin = rounding_margin(entries, clipping_range, bits)
        delta, weight = clip_update(delta, bound - margin), 1.0
    else:
        examples = float(metrics[keys.NUM_EXAMPLES])
        weight = min(examples, float(config[MAX_WEIGHT])) / float(config[MAX_WEIGHT])
    parts = [np.array([weight])] + [weight * t.numpy().ravel() for t in delta.values()]
    bit = int(inside) if config[COUNT_BIT] else None
    return np.concatenate(parts), bit


def quantized_vector(
    vector: np.ndarray, bit: int | None, config: ConfigRecord, statistics: np.ndarray | None = None
) -> np.ndarray:
    """What a client masks: w as an exact integer, its quantized w·Δ, then b and its
    statistics' entries as the integers they are."""
    quantized = quantize(vector[1:], float(config[CLIPPING_RANGE]), int(config[BITS]))
    parts = [[metric_sums.weight_entry(vector[0])], quantized]
    parts += [[bit]] if bit is not None else []
    parts += [statistics] if statistics is not None else []
    return np.concatenate(parts).astype(np.int64)


def train_statistics(run: RunConfig) -> tuple[str, ...]:
    """The training statistics a client puts inside the mask: without DP all of them. Under
    record-level DP it releases noised ones in the clear instead, under client-level DP none."""
    if run.dp.record_level or run.dp.client_level:
        return ()
    return metric_sums.statistics(train_metric_keys(run.mode, PLAIN))


@dataclass(frozen=True)
class VectorLayout:
    """Where each part of a client's vector lies: [w, w·Δ per tensor of ``spec``], then b with
    ``count_bit``, then the record count, weight and ``statistics`` (none: no such entries)."""

    spec: Layout
    count_bit: bool
    statistics: tuple[str, ...] = ()

    @property
    def floats(self) -> int:
        return sum(int(np.prod(shape)) for _, shape in self.spec)

    @property
    def size(self) -> int:
        extra = metric_sums.entries(self.statistics) if self.statistics else 0
        return 1 + self.floats + int(self.count_bit) + extra


@dataclass(frozen=True)
class SecureSum:
    """What the server learns from the unmasked sum: Σw, Σw·Δ per tensor, Σb (None without
    the bit), the round's statistics (empty without them)."""

    weight: float
    tensors: dict[str, torch.Tensor]
    unclipped: int | None
    metrics: dict[str, float]


def split_sum(
    total: np.ndarray, shape: VectorLayout, clipping_range: float, bits: int, count: int
) -> SecureSum:
    """The parts of the unmasked integer sum of ``count`` clients' vectors."""
    weight = metric_sums.summed_weight(int(total[0]))
    floats = dequantize_sum(total[1 : 1 + shape.floats], count, clipping_range, bits)
    offset, tensors = 0, {}
    for name, dims in shape.spec:
        size = int(np.prod(dims))
        tensors[name] = torch.from_numpy(floats[offset : offset + size].reshape(dims).copy())
        offset += size
    after = 1 + shape.floats
    bit = int(total[after]) if shape.count_bit else None
    extra = total[after + int(shape.count_bit) :]
    metrics = (
        metric_sums.decode_metrics(extra, shape.statistics, weight) if shape.statistics else {}
    )
    return SecureSum(weight, tensors, bit, metrics)
