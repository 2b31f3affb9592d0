"""What SecAgg+ messages carry, and the update vector both sides agree on.

A client's vector is [w, w·Δ, (b)]: its weight w, its update Δ flattened in the order of
``layout``, both inside one mask so that the server learns only Σw and Σw·Δ, and with adaptive
client-level clipping a last entry b, 1 when Δ was inside the clipping bound and 0 otherwise
(the server learns only Σb). w and w·Δ are quantized with stochastic rounding; b travels as the
integer itself, so Σb is exact. Without client-level DP, w is the client's examples over
``secagg.max-weight``; with it, every client weighs 1 and clips its own Δ, because the server never
sees Δ to clip it: to the bound less what rounding can add (``masking.rounding_margin``), so that
the bound still holds after quantization.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import ConfigRecord, MetricRecord

from federated import message_keys as keys
from federated.privacy.clipping import clip_update, update_norm
from federated.secagg.masking import dequantize_sum, quantize, rounding_margin

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
        margin = rounding_margin(entries, float(config[CLIPPING_RANGE]), int(config[BITS]))
        delta, weight = clip_update(delta, max(bound - margin, 0.0)), 1.0
    else:
        examples = float(metrics[keys.NUM_EXAMPLES])
        weight = min(examples, float(config[MAX_WEIGHT])) / float(config[MAX_WEIGHT])
    parts = [np.array([weight])] + [weight * t.numpy().ravel() for t in delta.values()]
    bit = int(inside) if config[COUNT_BIT] else None
    return np.concatenate(parts), bit


def quantized_vector(vector: np.ndarray, bit: int | None, config: ConfigRecord) -> np.ndarray:
    """What a client masks: its quantized [w, w·Δ], then b as the integer it is."""
    quantized = quantize(vector, float(config[CLIPPING_RANGE]), int(config[BITS]))
    return quantized if bit is None else np.append(quantized, bit)


def vector_size(spec: Layout, count_bit: bool) -> int:
    return 1 + sum(int(np.prod(shape)) for _, shape in spec) + int(count_bit)


def split_sum(
    total: np.ndarray, spec: Layout, count_bit: bool, clipping_range: float, bits: int, count: int
) -> tuple[float, dict[str, torch.Tensor], int | None]:
    """From the unmasked integer sum of ``count`` clients: Σw, Σw·Δ per tensor, and Σb (None
    without the bit)."""
    floats = dequantize_sum(total[: len(total) - int(count_bit)], count, clipping_range, bits)
    weight, offset, tensors = float(floats[0]), 1, {}
    for name, shape in spec:
        size = int(np.prod(shape))
        tensors[name] = torch.from_numpy(floats[offset : offset + size].reshape(shape).copy())
        offset += size
    return weight, tensors, int(total[-1]) if count_bit else None
