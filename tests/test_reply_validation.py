"""Every way a client reply can be bad is rejected with a reason; a sound one passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, MetricRecord, RecordDict

from federated.protocol import message_keys as keys
from federated.protocol.reply_contract import PLAIN as PLAIN_RELEASE
from federated.protocol.reply_contract import RECORD_LEVEL, eval_metric_keys, train_metric_keys
from federated.protocol.wire import tensors_to_record
from federated.secagg.protocol import MASKED
from federated.tasks import TASK_CLASSIFICATION
from server.reply_validation import check_evaluate_reply, check_masked_reply, check_train_reply
from tests.messages import message

REFERENCE = {"m.lora_A.weight": torch.zeros(2, 4), "m.lora_B.weight": torch.zeros(4, 2)}
PLAIN = train_metric_keys("lora", PLAIN_RELEASE)
METRICS = {
    keys.NUM_EXAMPLES: 10,
    keys.PARTITION_ID: 0,
    keys.LORA_RANK: 2,
    keys.TRAIN_LOSS: 1.5,
    keys.TRAIN_STEPS: 5,
    keys.TRAIN_SECONDS: 0.5,
    keys.PEAK_MEMORY_MB: 300.0,
}
EVAL = eval_metric_keys(TASK_CLASSIFICATION, personalised=False)


def _reply(content: RecordDict | None = None, error: Error | None = None):
    return message(content, src=7, reply_to="x", error=error)


def _train_content(tensors=None, metrics=None, **extra) -> RecordDict:
    tensors = {k: v + 0.1 for k, v in REFERENCE.items()} if tensors is None else tensors
    metrics = METRICS if metrics is None else metrics
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
        (_train_content(metrics={**METRICS, "extra": 1.0}), "metric keys differ: unexpected"),
        (
            _train_content(metrics={k: v for k, v in METRICS.items() if k != keys.TRAIN_SECONDS}),
            "metric keys differ: missing ['train-seconds']",
        ),
        (_train_content(metrics={**METRICS, keys.NUM_EXAMPLES: 0}), "must be positive"),
        (_train_content(metrics={**METRICS, keys.TRAIN_LOSS: float("inf")}), "not finite"),
        (_train_content(metrics={**METRICS, keys.TRAIN_LOSS: [1.0, 2.0]}), "not a number"),
        (RecordDict({keys.METRICS: MetricRecord(METRICS)}), "expected one array record"),
        (_train_content(second=ArrayRecord({"x": torch.zeros(1)})), "expected one array record"),
        (_train_content(other=MetricRecord({"x": 1.0})), "expected one metric record"),
        (_train_content(c=ConfigRecord({"x": 1})), "unexpected config records ['c']"),
        (
            RecordDict({keys.ARRAYS: tensors_to_record(REFERENCE)}),
            "expected one metric record 'metrics', got []",
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
            keys.METRICS: MetricRecord(METRICS),
        }
    )
    assert "dtype float64" in check_train_reply(_reply(content), REFERENCE, 10.0, PLAIN)


def test_an_oversize_array_is_refused_from_its_header_before_decoding() -> None:
    big = Array(np.zeros((2, 4), dtype=np.float32))
    big.data = big.data + bytes(50_000_000)  # shape says 2x4; 50 MB follow
    content = _train_content()
    content[keys.ARRAYS]["m.lora_A.weight"] = big
    assert "more than its shape (2, 4)" in check_train_reply(
        _reply(content), REFERENCE, 10.0, PLAIN
    )
    lying = Array(dtype="float32", shape=(2, 4), stype="numpy.ndarray", data=b"not an array")
    content[keys.ARRAYS]["m.lora_A.weight"] = lying
    assert "cannot be decoded" in check_train_reply(_reply(content), REFERENCE, 10.0, PLAIN)


def test_client_errors_are_rejected_for_train_and_evaluate() -> None:
    failed = _reply(error=Error(code=0, reason="out of memory"))
    assert "out of memory" in check_train_reply(failed, REFERENCE, 10.0, PLAIN)
    assert "out of memory" in check_evaluate_reply(failed, EVAL)


def test_evaluate_reply_needs_exactly_its_finite_metrics() -> None:
    values = {keys.NUM_EXAMPLES: 4, keys.EVAL_LOSS: 2.0, keys.EVAL_ACCURACY: 0.5}

    def check(metrics: dict, **extra) -> str | None:
        content = RecordDict({keys.METRICS: MetricRecord(metrics), **extra})
        return check_evaluate_reply(_reply(content), EVAL)

    assert check(values) is None
    assert "'eval-loss' is not finite" in check({**values, keys.EVAL_LOSS: float("nan")})
    assert "unexpected ['eval-global-loss']" in check({**values, keys.EVAL_GLOBAL_LOSS: 1.0})
    assert "missing ['eval-accuracy']" in check({keys.NUM_EXAMPLES: 4, keys.EVAL_LOSS: 2.0})
    assert "expected no array record" in check(values, a=ArrayRecord({"x": torch.zeros(1)}))


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
    metrics = MetricRecord(METRICS)
    return RecordDict({keys.ARRAYS: ArrayRecord({MASKED: Array(vector)}), keys.METRICS: metrics})


@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        (np.zeros(6, dtype=np.uint32), None),
        (np.zeros(6, dtype=np.int64), "'masked' has dtype int64, expected uint32"),
        (np.zeros(5, dtype=np.uint32), "'masked' has shape (5,), expected (6,)"),
        (np.zeros(6, dtype=np.float32), "'masked' has dtype float32, expected uint32"),
    ],
)
def test_a_masked_reply_must_be_size_uint32(vector: np.ndarray, reason: str | None) -> None:
    assert check_masked_reply(_reply(_masked_content(vector)), 6, PLAIN) == reason


def test_a_private_reply_reports_its_epsilon_instead_of_unnoised_statistics() -> None:
    private = train_metric_keys("lora", RECORD_LEVEL)
    spent = {k: v for k, v in METRICS.items() if k not in keys.UNNOISED_TRAIN_METRICS}
    spent[keys.DP_EPSILON] = 0.7
    check = check_train_reply(_reply(_train_content(metrics=spent)), REFERENCE, 10.0, private)
    assert check is None
    problem = check_train_reply(_reply(_train_content()), REFERENCE, 10.0, private)
    assert "missing ['dp-epsilon'], unexpected ['peak-memory-mb', 'train-loss'" in problem
