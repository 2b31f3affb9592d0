"""Checks on every client reply before it reaches a strategy.

A bad reply (a crashed client, a malformed or poisoned update) is rejected with a reason, and the
round goes on with the others; nothing here raises on client input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, Message

from federated.model.local_model import fit_rank
from federated.model.lora import factor_of
from federated.protocol import message_keys as keys
from federated.protocol.reply_contract import (
    DECLINED_METRIC_KEYS,
    PARTITION_METRIC_KEYS,
    metric_key_problem,
)
from federated.protocol.wire import WIRE_DTYPES, record_to_tensors, rounding_room
from federated.secagg.protocol import MASKED
from server.update_bounds import MoveBound


def client_failure(msg: Message) -> str:
    """A client's error in one line: the last line of what it raised, at most 300 characters."""
    lines = [line.strip() for line in (msg.error.reason or "").splitlines() if line.strip()]
    reason = lines[-1] if lines else f"error code {msg.error.code}"
    return f"client failed: {reason[:300]}"


# An array's bytes beyond its entries: numpy's header, which states dtype and shape.
_ARRAY_HEADER_BYTES = 1024


def _content_problem(msg: Message, metric_keys: frozenset[str], arrays: bool) -> str | None:
    """Why a reply's records or metrics are not what the round asked for: exactly one metric
    record with exactly ``metric_keys``, each a finite number, a positive weight, and exactly
    one array record when ``arrays`` (else none), no config record."""
    if msg.has_error():
        return client_failure(msg)
    content = msg.content
    if content.config_records:
        return f"unexpected config records {sorted(content.config_records)[:3]}"
    if list(content.metric_records) != [keys.METRICS]:
        return f"expected one metric record '{keys.METRICS}', got {sorted(content.metric_records)}"
    if list(content.array_records) != ([keys.ARRAYS] if arrays else []):
        wanted = f"one array record '{keys.ARRAYS}'" if arrays else "no array record"
        return f"expected {wanted}, got {sorted(content.array_records)}"
    metrics = content.metric_records[keys.METRICS]
    problem = metric_key_problem(set(metrics), metric_keys)
    if problem:
        return problem
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric '{name}' is not a number: {str(value)[:40]}"
        if not math.isfinite(value):
            return f"metric '{name}' is not finite: {value!r}"
    if keys.NUM_EXAMPLES in metric_keys and metrics[keys.NUM_EXAMPLES] <= 0:
        return f"metric '{keys.NUM_EXAMPLES}' must be positive, got {metrics[keys.NUM_EXAMPLES]}"
    return None


def _array_problem(name: str, array: Array, shape: tuple[int, ...], dtype: str) -> str | None:
    """Why an array is not ``shape`` of ``dtype``, read from its header before it is decoded."""
    if array.stype != "numpy.ndarray" or array.dtype != dtype:
        return f"'{name}' has dtype {array.dtype}, expected {dtype}"
    if tuple(array.shape) != tuple(shape):
        return f"'{name}' has shape {tuple(array.shape)}, expected {tuple(shape)}"
    itemsize = WIRE_DTYPES[dtype].itemsize if dtype in WIRE_DTYPES else np.dtype(dtype).itemsize
    if len(array.data) > math.prod(shape) * itemsize + _ARRAY_HEADER_BYTES:
        return f"'{name}' holds {len(array.data)} bytes, more than its shape {tuple(shape)}"
    return None


def _decoded(msg: Message) -> tuple[dict[str, torch.Tensor], str | None]:
    try:
        return record_to_tensors(msg.content.array_records[keys.ARRAYS]), None
    except Exception as err:  # a malformed array must not stop the round
        return {}, f"arrays cannot be decoded: {str(err)[:200]}"


def _shape_problem(got: torch.Size, want: torch.Size, rank_dim: int | None) -> str | None:
    """Why ``got`` does not fit ``want``; a LoRA factor may have a smaller rank when ``rank_dim``
    names its rank dimension (0 for A [r, d_in], 1 for B [d_out, r])."""
    if got == want:
        return None
    if rank_dim is not None and len(got) == len(want) == 2:
        other = 1 - rank_dim
        if got[other] == want[other] and 1 <= got[rank_dim] <= want[rank_dim]:
            return None
    return f"has shape {tuple(got)}, expected {tuple(want)}"


def _rank_mismatch(update: Mapping[str, torch.Tensor]) -> str | None:
    ranks: dict[str, set[int]] = {}
    for key, tensor in update.items():
        factor = factor_of(key)
        if factor is not None:
            module, rank_dim = factor
            ranks.setdefault(module, set()).add(tensor.shape[rank_dim])
    for module, seen in ranks.items():
        if len(seen) > 1:
            return f"'{module}' has factors of different ranks {sorted(seen)}"
    return None


def check_train_reply(
    msg: Message,
    reference: Mapping[str, torch.Tensor],
    max_update_norm: float,
    metric_keys: frozenset[str],
    *,
    allow_lower_rank: bool = False,
    move: MoveBound | None = None,
    sent: Mapping[str, torch.Tensor] | None = None,
    wire: str = "float32",
) -> str | None:
    """Why this training reply must be rejected, or None when it is sound.

    ``reference`` holds what the client should send back: the reply must report exactly
    ``metric_keys`` (``federated.protocol.reply_contract``) and carry the same tensor names, the
    same shapes (or, with ``allow_lower_rank``, LoRA factors of a smaller rank), in the ``wire``
    dtype, only finite values, and move no further from the reference than ``max_update_norm``
    (L2 over all tensors, the reference cut to the reply's rank, plus what rounding to ``wire``
    can add) nor any weight further than ``move`` allows; a tensor the round ``sent`` is
    measured from what was sent, as the client decoded it, which is where the client started.
    Names, shapes, dtypes and sizes are checked from the arrays' headers, before anything is
    decoded.
    """
    problem = _content_problem(msg, metric_keys, arrays=True)
    if problem:
        return problem
    record = msg.content.array_records[keys.ARRAYS]
    missing, extra = set(reference) - set(record), set(record) - set(reference)
    if missing or extra:
        return f"tensor names differ: missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}"
    for name, ref in reference.items():
        array = record[name]
        factor = factor_of(name) if allow_lower_rank else None
        problem = _shape_problem(torch.Size(array.shape), ref.shape, factor[1] if factor else None)
        problem = problem and f"'{name}' {problem}"
        problem = problem or _array_problem(name, array, tuple(array.shape), wire)
        if problem:
            return problem
    update, problem = _decoded(msg)
    if problem:
        return problem
    squared, size, count = 0.0, 0.0, 0
    for name, ref in reference.items():
        tensor = update[name]
        if tensor.shape != torch.Size(record[name].shape) or tensor.dtype != torch.float32:
            return f"'{name}' decodes to {tensor.dtype} {tuple(tensor.shape)}, not its header's"
        if not torch.isfinite(tensor).all():
            return f"'{name}' has non-finite values"
        start = (sent or {}).get(name, ref)
        delta = tensor.double() - fit_rank(start, tensor.shape).double()
        if move is not None and delta.numel():
            problem = move.problem(name, float(delta.abs().max()))
            if problem:
                return problem
        squared += float(delta.pow(2).sum())
        size += float(tensor.double().pow(2).sum())
        count += tensor.numel()
    problem = _rank_mismatch(update)
    if problem:
        return problem
    norm = math.sqrt(squared)
    # The client's values before its own rounding moved no further than the bound.
    if norm > max_update_norm + rounding_room(wire, math.sqrt(size), count):
        return f"update norm {norm:.3g} exceeds server.max-update-norm {max_update_norm:.3g}"
    return None


def check_seed_reply(
    msg: Message,
    pool_size: int,
    max_steps: int,
    metric_keys: frozenset[str],
    max_scalar: float,
    hybrid: Mapping[str, torch.Tensor] | None = None,
    max_update_norm: float = math.inf,
) -> str | None:
    """Why this zeroth-order reply must be rejected: it may carry only seed indices in the pool
    and as many finite scalars no larger than ``max_scalar``, at most one pair per local step,
    and the ``hybrid`` modules' tensors (``zo.hybrid``: the values sent), in their shapes, finite,
    moved no further than ``max_update_norm`` from what was sent."""
    problem = _content_problem(msg, metric_keys, arrays=True)
    if problem:
        return problem
    record = msg.content.array_records[keys.ARRAYS]
    hybrid = hybrid or {}
    if set(record) != {keys.SEED_INDICES, keys.SEED_SCALARS, *hybrid}:
        expected = [keys.SEED_INDICES, keys.SEED_SCALARS, *sorted(hybrid)[:2]]
        return (
            f"expected {', '.join(expected)}{' ...' * (len(hybrid) > 2)}, got {sorted(record)[:4]}"
        )
    pairs = tuple(record[keys.SEED_INDICES].shape)
    if len(pairs) != 1 or pairs[0] > max_steps:
        return f"{pairs} steps reported, at most ({max_steps},) (train.local-steps) allowed"
    for name, dtype in ((keys.SEED_INDICES, "int64"), (keys.SEED_SCALARS, "float32")):
        problem = _array_problem(name, record[name], pairs, dtype)
        if problem:
            return problem
    for name, sent in hybrid.items():
        problem = _array_problem(name, record[name], tuple(sent.shape), "float32")
        if problem:
            return problem
    steps, problem = _decoded(msg)
    if problem:
        return problem
    if hybrid:
        if not all(torch.isfinite(steps[name]).all() for name in hybrid):
            return "non-finite hybrid tensors"
        norm = math.sqrt(
            sum(float((steps[k].double() - v.double()).pow(2).sum()) for k, v in hybrid.items())
        )
        if norm > max_update_norm:
            return (
                f"hybrid update norm {norm:.3g} exceeds server.max-update-norm "
                f"{max_update_norm:.3g}"
            )
    indices, scalars = steps[keys.SEED_INDICES], steps[keys.SEED_SCALARS]
    if indices.shape != pairs or scalars.shape != pairs:
        return f"indices {tuple(indices.shape)} and scalars {tuple(scalars.shape)} do not pair up"
    if len(indices) and (indices.min() < 0 or indices.max() >= pool_size):
        return f"seed index outside the pool of {pool_size}"
    if not torch.isfinite(scalars).all():
        return "non-finite scalars"
    if len(scalars) and float(scalars.abs().max()) > max_scalar:
        return (
            f"a scalar of size {float(scalars.abs().max()):.3g} exceeds server.max-zo-scalar "
            f"{max_scalar:.3g}"
        )
    return None


def check_masked_reply(msg: Message, size: int, metric_keys: frozenset[str]) -> str | None:
    """Why a SecAgg+ collect reply cannot join the sum: its metrics, or a masked vector that is
    not ``size`` uint32 entries (integers modulo 2^32). Nothing more is checkable: it is masked."""
    problem = _content_problem(msg, metric_keys, arrays=True)
    if problem:
        return problem
    record = msg.content.array_records[keys.ARRAYS]
    if list(record) != [MASKED]:
        return f"expected one array record '{keys.ARRAYS}' holding '{MASKED}'"
    return _array_problem(MASKED, record[MASKED], (size,), "uint32")


def check_declined_reply(msg: Message) -> str | None:
    """Why a reply that says its privacy budget is spent is malformed, or None."""
    return _content_problem(msg, DECLINED_METRIC_KEYS, arrays=False)


def says_declined(msg: Message) -> bool:
    """Whether a reply says its client did not train because its privacy budget is spent."""
    if msg.has_error() or keys.METRICS not in msg.content.metric_records:
        return False
    return keys.DP_DECLINED in msg.content.metric_records[keys.METRICS]


def budget_declined(msg: Message) -> str:
    """Why a client that declined (its reply checked by ``check_declined_reply``) did not train."""
    metrics = msg.content.metric_records[keys.METRICS]
    spent, would = metrics[keys.DP_EPSILON], metrics[keys.DP_EPSILON_NEXT]
    return f"privacy budget spent: epsilon {spent:.3g} so far, this round would reach {would:.3g}"


def check_evaluate_reply(msg: Message, metric_keys: frozenset[str]) -> str | None:
    """Why this evaluation reply must be ignored, or None when it is sound."""
    return _content_problem(msg, metric_keys, arrays=False)


def check_partition_reply(msg: Message) -> str | None:
    """Why a node's answer to which partition it holds is unusable, or None when it is sound."""
    problem = _content_problem(msg, PARTITION_METRIC_KEYS, arrays=False)
    if problem:
        return problem
    metrics = msg.content.metric_records[keys.METRICS]
    partition, count = metrics[keys.PARTITION_ID], metrics[keys.NUM_PARTITIONS]
    if partition != int(partition) or count != int(count) or not 0 <= partition < count:
        return f"partition {partition!r} of {count!r} is not a partition"
    if metrics[keys.ZO_ON_FACTORS] not in (0, 1):
        return f"{keys.ZO_ON_FACTORS} = {metrics[keys.ZO_ON_FACTORS]!r}, not 0 or 1"
    return None
