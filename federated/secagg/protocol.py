"""What SecAgg+ messages carry, and the update vector both sides agree on.

A client's vector is [w, w·Δ, (b)]: its weight w, its update Δ flattened in the order of
``layout``, both inside one mask so that the server learns only Σw and Σw·Δ, and with
client-level DP a last bit b saying whether Δ was inside the clipping bound (adaptive clipping
counts them, also only as a sum). Without client-level DP, w is the client's examples over
``secagg.max-weight``; with it, every client weighs 1 and clips its own Δ, because the server never
sees Δ to clip it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ConfigRecord, MetricRecord

from federated import message_keys as keys
from federated.privacy.clipping import clip_update, update_norm

# Message types (train.<action>, a Python identifier) of the four stages, and their records.
SETUP, SHARE_KEYS = "secagg_setup", "secagg_share_keys"
COLLECT, UNMASK = "secagg_collect", "secagg_unmask"
CONFIG = "secagg"
STATE = "secagg-state"
PK_MASK, PK_ENCRYPT = "pk-mask", "pk-encrypt"
SK_MASK, SK_ENCRYPT, SEED = "sk-mask", "sk-encrypt", "seed"
NODES, PK_MASKS, PK_ENCRYPTS, THRESHOLD = "nodes", "pk-masks", "pk-encrypts", "threshold"
DESTINATIONS, SOURCES, CIPHERTEXTS = "destinations", "sources", "ciphertexts"
SHARE_OWNERS, SEED_SHARES, KEY_SHARES = "share-owners", "seed-shares", "key-shares"
SHARES = "shares"
ACTIVE, DROPPED = "active", "dropped"
MASKED = "masked"
CLIPPING_RANGE, BITS, MAX_WEIGHT = "clipping-range", "bits", "max-weight"
CLIP_NORM, COUNT_BIT, POOL_SIZE = "clip-norm", "count-bit", "pool-size"

Layout = list[tuple[str, tuple[int, ...]]]


def layout(reference: Mapping[str, torch.Tensor], sent: Mapping[str, torch.Tensor]) -> Layout:
    """The tensors a client's update covers: what it sends back that it was also sent."""
    return [(name, tuple(reference[name].shape)) for name in sorted(reference) if name in sent]


def _delta(received: Mapping, upload: Mapping, config: ConfigRecord) -> dict[str, torch.Tensor]:
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
) -> np.ndarray:
    """[w, w·Δ, (b)] of one client, in float64."""
    delta = _delta(received, upload, config)
    bound = float(config[CLIP_NORM])
    inside = update_norm(delta) <= bound if bound > 0 else True
    if bound > 0:
        delta, weight = clip_update(delta, bound), 1.0
    else:
        examples = float(metrics[keys.NUM_EXAMPLES])
        weight = min(examples, float(config[MAX_WEIGHT])) / float(config[MAX_WEIGHT])
    parts = [np.array([weight])]
    parts += [weight * t.numpy().ravel() for t in delta.values()]
    if config[COUNT_BIT]:
        parts.append(np.array([1.0 if inside else 0.0]))
    return np.concatenate(parts)


def vector_size(spec: Layout, count_bit: bool) -> int:
    return 1 + sum(int(np.prod(shape)) for _, shape in spec) + int(count_bit)


def split_sum(
    total: np.ndarray, spec: Layout, count_bit: bool
) -> tuple[float, dict[str, torch.Tensor], float | None]:
    """Σw, Σw·Δ per tensor, and the count of unclipped clients (None without the bit)."""
    weight, offset, tensors = float(total[0]), 1, {}
    for name, shape in spec:
        size = int(np.prod(shape))
        tensors[name] = torch.from_numpy(total[offset : offset + size].reshape(shape).copy())
        offset += size
    return weight, tensors, float(total[offset]) if count_bit else None
