"""Every way a client reply can be bad is rejected with a reason; a sound one passes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Metadata, MetricRecord, RecordDict
from flwr.common.serde import make_message

from federated import message_keys as keys
from federated.secagg.protocol import MASKED
from federated.wire import tensors_to_record
from server.reply_validation import (
    check_evaluate_reply,
    check_masked_reply,
    check_train_reply,
    train_metrics_required,
)

REFERENCE = {"m.lora_A.weight": torch.zeros(2, 4), "m.lora_B.weight": torch.zeros(4, 2)}
PLAIN = train_metrics_required(private=False)


def _reply(content: RecordDict | None = None, error: Error | None = None):
    metadata = Metadata(
        run_id=1,
        message_id="",
        src_node_id=7,
        dst_node_id=0,
        reply_to_message_id="x",
        group_id="",
        created_at=time.time(),
        ttl=60.0,
        message_type="train",
    )
    return make_message(metadata, content=content, error=error)


def _train_content(tensors=None, metrics=None, **extra) -> RecordDict:
    tensors = {k: v + 0.1 for k, v in REFERENCE.items()} if tensors is None else tensors
    metrics = {keys.NUM_EXAMPLES: 10, keys.TRAIN_LOSS: 1.5} if metrics is None else metrics
    return RecordDict(
        {keys.ARRAYS: tensors_to_record(tensors), keys.METRICS: MetricRecord(metrics), **extra}
    )


def test_sound_reply_passes() -> None:
    assert check_train_reply(_reply(_train_content()), REFERENCE, 10.0, PLAIN) is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            _train_content(tensors={"m.lora_A.weight": torch.zeros(2, 4)}),
            "missing ['m.lora_B.weight']",
        ),
        (_train_content(tensors={**REFERENCE, "extra": torch.zeros(1)}), "unexpected ['extra']"),
        (
            _train_content(tensors={**REFERENCE, "m.lora_B.weight": torch.zeros(4, 3)}),
            "has shape (4, 3)",
        ),
        (
            _train_content(
                tensors={**REFERENCE, "m.lora_A.weight": torch.full((2, 4), float("nan"))}
            ),
            "non-finite",
        ),
        (
            _train_content(tensors={**REFERENCE, "m.lora_A.weight": torch.full((2, 4), 100.0)}),
            "exceeds server.max-update-norm",
        ),
        (_train_content(metrics={keys.TRAIN_LOSS: 1.0}), "metric 'num-examples' missing"),
        (_train_content(metrics={keys.NUM_EXAMPLES: 0, keys.TRAIN_LOSS: 1.0}), "must be positive"),
        (
            _train_content(metrics={keys.NUM_EXAMPLES: 3, keys.TRAIN_LOSS: float("inf")}),
            "not a finite number",
        ),
        (
            RecordDict({keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1})}),
            "exactly one array record",
        ),
        (_train_content(second=ArrayRecord({"x": torch.zeros(1)})), "exactly one array record"),
        (
            RecordDict({keys.ARRAYS: tensors_to_record(REFERENCE), "c": ConfigRecord({})}),
            "no 'metrics' metric record",
        ),
    ],
)
def test_bad_train_replies_are_rejected_with_the_reason(content: RecordDict, reason: str) -> None:
    problem = check_train_reply(_reply(content), REFERENCE, 10.0, PLAIN)
    assert problem is not None and reason in problem


def test_wrong_dtype_is_rejected() -> None:
    content = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({k: v.double() for k, v in REFERENCE.items()}),
            keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1, keys.TRAIN_LOSS: 1.0}),
        }
    )
    assert "dtype torch.float64" in check_train_reply(_reply(content), REFERENCE, 10.0, PLAIN)


def test_client_errors_are_rejected_for_train_and_evaluate() -> None:
    failed = _reply(error=Error(code=0, reason="out of memory"))
    assert "out of memory" in check_train_reply(failed, REFERENCE, 10.0, PLAIN)
    assert "out of memory" in check_evaluate_reply(failed)


def test_evaluate_reply_needs_finite_loss() -> None:
    good = RecordDict({keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 4, keys.EVAL_LOSS: 2.0})})
    bad = RecordDict(
        {keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 4, keys.EVAL_LOSS: float("nan")})}
    )
    assert check_evaluate_reply(_reply(good)) is None
    assert "eval-loss" in check_evaluate_reply(_reply(bad))


def test_lower_rank_factors_pass_only_for_mixed_rank_strategies() -> None:
    reference = {"m.lora_A.weight": torch.zeros(4, 6), "m.lora_B.weight": torch.zeros(5, 4)}
    low = {"m.lora_A.weight": torch.ones(2, 6), "m.lora_B.weight": torch.ones(5, 2)}
    reply = _reply(_train_content(tensors=low))
    assert check_train_reply(reply, reference, 100.0, PLAIN, allow_lower_rank=True) is None
    assert "has shape (2, 6), expected (4, 6)" in check_train_reply(reply, reference, 100.0, PLAIN)
    uneven = {"m.lora_A.weight": torch.ones(2, 6), "m.lora_B.weight": torch.ones(5, 3)}
    problem = check_train_reply(
        _reply(_train_content(tensors=uneven)), reference, 100.0, PLAIN, allow_lower_rank=True
    )
    assert "factors of different ranks [2, 3]" in problem
    wide = {"m.lora_A.weight": torch.ones(2, 7), "m.lora_B.weight": torch.ones(5, 2)}
    problem = check_train_reply(
        _reply(_train_content(tensors=wide)), reference, 100.0, PLAIN, allow_lower_rank=True
    )
    assert "has shape (2, 7)" in problem


def _masked_content(vector: np.ndarray) -> RecordDict:
    metrics = MetricRecord({keys.NUM_EXAMPLES: 10, keys.TRAIN_LOSS: 1.5})
    return RecordDict({keys.ARRAYS: ArrayRecord({MASKED: Array(vector)}), keys.METRICS: metrics})


@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        (np.zeros(6, dtype=np.uint32), None),
        (np.zeros(6, dtype=np.int64), "masked vector int64 (6,), expected uint32 (6,)"),
        (np.zeros(5, dtype=np.uint32), "masked vector uint32 (5,), expected uint32 (6,)"),
        (np.zeros(6, dtype=np.float32), "masked vector float32 (6,), expected uint32 (6,)"),
    ],
)
def test_a_masked_reply_must_be_size_uint32(vector: np.ndarray, reason: str | None) -> None:
    assert check_masked_reply(_reply(_masked_content(vector)), 6, PLAIN) == reason


def test_a_private_reply_reports_its_epsilon_instead_of_its_loss() -> None:
    private = train_metrics_required(private=True)
    spent = {keys.NUM_EXAMPLES: 12, keys.DP_EPSILON: 0.7}
    assert check_train_reply(_reply(_train_content(metrics=spent)), REFERENCE, 10.0, private) is None
    no_epsilon = _train_content(metrics={keys.NUM_EXAMPLES: 12, keys.TRAIN_LOSS: 1.0})
    assert "'dp-epsilon' missing" in check_train_reply(_reply(no_epsilon), REFERENCE, 10.0, private)
