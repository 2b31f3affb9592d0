"""Checks on every client reply before it reaches a strategy.

A bad reply (a crashed client, a malformed or poisoned update) is rejected with a reason, and the
round goes on with the others; nothing here raises on client input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Message

from federated import message_keys as keys
from federated.local_model import fit_rank
from federated.lora import factor_of
from federated.secagg.protocol import MASKED
from federated.wire import WIRE_DTYPE, record_to_tensors


def client_failure(msg: Message) -> str:
    """A client's error in one line: the last line of what it raised, at most 300 characters."""
    lines = [line.strip() for line in (msg.error.reason or "").splitlines() if line.strip()]
    reason = lines[-1] if lines else f"error code {msg.error.code}"
    return f"client failed: {reason[:300]}"


def _metrics_problem(msg: Message, required: tuple[str, ...]) -> str | None:
    records = msg.content.metric_records
    if keys.METRICS not in records:
        return f"no '{keys.METRICS}' metric record"
    metrics = records[keys.METRICS]
    for name in required:
        if name not in metrics:
            return f"metric '{name}' missing"
        value = metrics[name]
        if not isinstance(value, int | float) or not math.isfinite(value):
            return f"metric '{name}' is not a finite number: {value!r}"
    if metrics[keys.NUM_EXAMPLES] <= 0:
        return f"metric '{keys.NUM_EXAMPLES}' must be positive, got {metrics[keys.NUM_EXAMPLES]}"
    return None


def train_metrics_required(private: bool) -> tuple[str, ...]:
    """What every training reply must report: its weight, and its loss, or under record-level
    DP instead of the loss (which a private client does not release) the epsilon it spent."""
    return (keys.NUM_EXAMPLES, keys.DP_EPSILON if private else keys.TRAIN_LOSS)


def _train_arrays(
    msg: Message, required: tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The tensors of a training reply, or why the reply is unusable before looking at them."""
    if msg.has_error():
        return {}, client_failure(msg)
    records = msg.content.array_records
    if list(records) != [keys.ARRAYS]:
        return {}, f"expected exactly one array record '{keys.ARRAYS}', got {sorted(records)}"
    problem = _metrics_problem(msg, required)
    if problem:
        return {}, problem
    try:
        return record_to_tensors(records[keys.ARRAYS]), None
    except Exception as err:  # a malformed array must not stop the round
        return {}, f"arrays cannot be decoded: {err}"


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
    required: tuple[str, ...],
    *,
    allow_lower_rank: bool = False,
) -> str | None:
    """Why this training reply must be rejected, or None when it is sound.

    ``reference`` holds what the client should send back: the reply must report the
    ``required`` metrics (``train_metrics_required``) and carry the same tensor names,
    the same shapes (or, with ``allow_lower_rank``, LoRA factors of a smaller rank), fp32, only
    finite values, and move no further from the reference than ``max_update_norm`` (L2 over all
    tensors, the reference cut to the reply's rank).
    """
    update, problem = _train_arrays(msg, required)
    if problem:
        return problem
    missing, extra = set(reference) - set(update), set(update) - set(reference)
    if missing or extra:
        return f"tensor names differ: missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}"
    squared = 0.0
    for name, ref in reference.items():
        tensor = update[name]
        factor = factor_of(name) if allow_lower_rank else None
        problem = _shape_problem(tensor.shape, ref.shape, factor[1] if factor else None)
        if problem:
            return f"'{name}' {problem}"
        if tensor.dtype != WIRE_DTYPE:
            return f"'{name}' has dtype {tensor.dtype}, expected {WIRE_DTYPE}"
        if not torch.isfinite(tensor).all():
            return f"'{name}' has non-finite values"
        squared += float((tensor.double() - fit_rank(ref, tensor.shape).double()).pow(2).sum())
    problem = _rank_mismatch(update)
    if problem:
        return problem
    norm = math.sqrt(squared)
    if norm > max_update_norm:
        return f"update norm {norm:.3g} exceeds server.max-update-norm {max_update_norm:.3g}"
    return None


def check_seed_reply(
    msg: Message, pool_size: int, max_steps: int, required: tuple[str, ...]
) -> str | None:
    """Why this zeroth-order reply must be rejected: it may carry only seed indices in the pool
    and as many finite scalars, at most one pair per local step."""
    steps, problem = _train_arrays(msg, required)
    if problem:
        return problem
    if set(steps) != {keys.SEED_INDICES, keys.SEED_SCALARS}:
        return f"expected {keys.SEED_INDICES} and {keys.SEED_SCALARS}, got {sorted(steps)}"
    indices, scalars = steps[keys.SEED_INDICES], steps[keys.SEED_SCALARS]
    if indices.dim() != 1 or indices.shape != scalars.shape:
        return f"indices {tuple(indices.shape)} and scalars {tuple(scalars.shape)} do not pair up"
    if indices.dtype != torch.int64 or scalars.dtype != WIRE_DTYPE:
        return (
            f"expected int64 indices and {WIRE_DTYPE} scalars, got {indices.dtype}, {scalars.dtype}"
        )
    if len(indices) > max_steps:
        return f"{len(indices)} steps reported, at most {max_steps} (train.local-steps) allowed"
    if len(indices) and (indices.min() < 0 or indices.max() >= pool_size):
        return f"seed index outside the pool of {pool_size}"
    if not torch.isfinite(scalars).all():
        return "non-finite scalars"
    return None


def check_masked_reply(msg: Message, size: int, required: tuple[str, ...]) -> str | None:
    """Why a SecAgg+ collect reply cannot join the sum: its metrics, or a masked vector that is
    not ``size`` uint32 entries (integers modulo 2^32). Nothing more is checkable: it is masked."""
    if msg.has_error():
        return client_failure(msg)
    records = msg.content.array_records
    if list(records) != [keys.ARRAYS] or list(records[keys.ARRAYS]) != [MASKED]:
        return f"expected one array record '{keys.ARRAYS}' holding '{MASKED}'"
    problem = _metrics_problem(msg, required)
    if problem:
        return problem
    masked = records[keys.ARRAYS][MASKED].numpy()
    if masked.dtype != np.uint32 or masked.shape != (size,):
        return f"masked vector {masked.dtype} {masked.shape}, expected uint32 ({size},)"
    return None


def budget_declined(msg: Message) -> str | None:
    """Why the client did not train, when it says its privacy budget is spent; else None."""
    if msg.has_error() or keys.METRICS not in msg.content.metric_records:
        return None
    metrics = msg.content.metric_records[keys.METRICS]
    if not metrics.get(keys.DP_DECLINED):
        return None
    spent = metrics.get(keys.DP_EPSILON, math.nan)
    would = metrics.get(keys.DP_EPSILON_NEXT, math.nan)
    return f"privacy budget spent: epsilon {spent:.3g} so far, this round would reach {would:.3g}"


def check_evaluate_reply(msg: Message) -> str | None:
    """Why this evaluation reply must be ignored, or None when it is sound."""
    if msg.has_error():
        return client_failure(msg)
    return _metrics_problem(msg, (keys.NUM_EXAMPLES, keys.EVAL_LOSS))
