"""Checks on every client reply before it reaches a strategy.

A bad reply (a crashed client, a malformed or poisoned update) is rejected with a reason, and the
round goes on with the others; nothing here raises on client input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from flwr.app import Message

from federated import message_keys as keys
from federated.wire import WIRE_DTYPE, record_to_tensors


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


def check_train_reply(
    msg: Message, reference: Mapping[str, torch.Tensor], max_update_norm: float
) -> str | None:
    """Why this training reply must be rejected, or None when it is sound.

    ``reference`` holds the global tensors the client was sent: the reply must carry the same
    names, shapes and dtype, only finite values, and move no further from them than
    ``max_update_norm`` (L2 over all tensors).
    """
    if msg.has_error():
        return f"client failed: {msg.error.reason}"
    records = msg.content.array_records
    if list(records) != [keys.ARRAYS]:
        return f"expected exactly one array record '{keys.ARRAYS}', got {sorted(records)}"
    problem = _metrics_problem(msg, (keys.NUM_EXAMPLES, keys.TRAIN_LOSS))
    if problem:
        return problem
    try:
        update = record_to_tensors(records[keys.ARRAYS])
    except Exception as err:  # a malformed array must not stop the round
        return f"arrays cannot be decoded: {err}"
    missing, extra = set(reference) - set(update), set(update) - set(reference)
    if missing or extra:
        return f"tensor names differ: missing {sorted(missing)[:3]}, unexpected {sorted(extra)[:3]}"
    squared = 0.0
    for name, ref in reference.items():
        tensor = update[name]
        if tensor.shape != ref.shape:
            return f"'{name}' has shape {tuple(tensor.shape)}, expected {tuple(ref.shape)}"
        if tensor.dtype != WIRE_DTYPE:
            return f"'{name}' has dtype {tensor.dtype}, expected {WIRE_DTYPE}"
        if not torch.isfinite(tensor).all():
            return f"'{name}' has non-finite values"
        squared += float((tensor.double() - ref.double()).pow(2).sum())
    norm = math.sqrt(squared)
    if norm > max_update_norm:
        return f"update norm {norm:.3g} exceeds server.max-update-norm {max_update_norm:.3g}"
    return None


def check_evaluate_reply(msg: Message) -> str | None:
    """Why this evaluation reply must be ignored, or None when it is sound."""
    if msg.has_error():
        return f"client failed: {msg.error.reason}"
    return _metrics_problem(msg, (keys.NUM_EXAMPLES, keys.EVAL_LOSS))
