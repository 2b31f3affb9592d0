"""Fuzzing the server's reply checks: whatever a client sends, the server answers with a verdict
and never raises."""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federated.config import parse_run_config
from federated.protocol import message_keys as keys
from federated.protocol.global_model import GlobalModel
from federated.protocol.reply_contract import (
    DECLINED_METRIC_KEYS,
    PARTITION_METRIC_KEYS,
    PLAIN,
    RECORD_LEVEL,
    eval_metric_keys,
    train_metric_keys,
)
from server.exchange import Exchange
from server.reply_screen import TrainScreen, screen_evaluate
from server.reply_validation import (
    check_declined_reply,
    check_evaluate_reply,
    check_masked_reply,
    check_partition_reply,
    check_seed_reply,
    check_train_reply,
)
from server.update_bounds import ExampleBound
from strategies.registry import build_strategy
from tests.test_reply_validation import REFERENCE, _reply

KNOWN_NAMES = sorted(
    set(REFERENCE)
    | {keys.SEED_INDICES, keys.SEED_SCALARS, "masked", keys.ARRAYS, keys.METRICS, "x"}
)
METRIC_NAMES = sorted(
    train_metric_keys("lora", PLAIN)
    | train_metric_keys("zo", RECORD_LEVEL)
    | DECLINED_METRIC_KEYS
    | eval_metric_keys("classification", True)
    | PARTITION_METRIC_KEYS
    | {"x", ""}
)

integers = st.integers(min_value=-(2**62), max_value=2**62)
floats = st.floats(allow_nan=True, allow_infinity=True)
# What a MetricRecord can hold on the wire: a number, or a list of integers or of floats.
metric_values = st.one_of(
    integers, floats, st.lists(integers, max_size=3), st.lists(floats, max_size=3)
)
names = st.one_of(st.sampled_from(KNOWN_NAMES), st.text(max_size=8))
shapes = st.lists(st.integers(min_value=0, max_value=5), max_size=3).map(tuple)
dtypes = st.sampled_from(["float32", "float64", "int64", "int32", "uint32", "float16", "bool"])


@st.composite
def arrays(draw) -> Array:
    if draw(st.booleans()):
        dtype, shape = draw(dtypes), draw(shapes)
        values = np.zeros(shape, dtype=dtype)
        if values.size and dtype.startswith("float"):
            values.flat[0] = draw(st.floats(allow_nan=True, allow_infinity=True, width=16))
        return Array(values)
    # a header that may not match its bytes, and bytes that may not be an array at all
    return Array(
        dtype=draw(dtypes),
        shape=draw(shapes),
        stype=draw(st.sampled_from(["numpy.ndarray", "torch", ""])),
        data=draw(st.binary(max_size=256)),
    )


@st.composite
def contents(draw) -> RecordDict:
    content = RecordDict()
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        kind = draw(st.sampled_from(["metrics", "arrays", "config"]))
        name = draw(st.sampled_from([keys.METRICS, keys.ARRAYS, "other"]))
        if kind == "metrics":
            values = draw(st.dictionaries(st.sampled_from(METRIC_NAMES), metric_values, max_size=9))
            content[name] = MetricRecord(values)
        elif kind == "arrays":
            content[name] = ArrayRecord(draw(st.dictionaries(names, arrays(), max_size=4)))
        else:
            content[name] = ConfigRecord({"x": draw(st.integers())})
    return content


replies = st.one_of(
    contents().map(lambda c: _reply(c)),
    st.text(max_size=40).map(lambda reason: _reply(error=Error(code=0, reason=reason))),
)


def _screen() -> TrainScreen:
    config = parse_run_config({"model.name": "tiny-llama", "lora.rank": 2})
    strategy = build_strategy(config, GlobalModel({k: v.clone() for k, v in REFERENCE.items()}))
    return TrainScreen(strategy, config, examples=ExampleBound((100.0, 100.0), 0.0))


SCREEN = _screen()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(replies)
def test_no_training_reply_makes_a_check_raise(reply) -> None:
    plain = train_metric_keys("lora", PLAIN)
    verdicts = [
        check_train_reply(reply, REFERENCE, 10.0, plain),
        check_train_reply(reply, REFERENCE, 10.0, plain, allow_lower_rank=True),
        check_seed_reply(reply, 16, 4, train_metric_keys("zo", PLAIN), 1000.0),
        check_masked_reply(reply, 6, plain),
        check_declined_reply(reply),
    ]
    assert all(v is None or isinstance(v, str) for v in verdicts)


@FUZZ
@given(replies)
def test_no_evaluation_reply_makes_a_check_raise(reply) -> None:
    verdict = check_evaluate_reply(reply, eval_metric_keys("classification", False))
    assert verdict is None or isinstance(verdict, str)
    screen_evaluate(
        Exchange([reply], {7: 1}, {7: 1}), eval_metric_keys("causal-lm", False), 8, {7: 0}
    )


@FUZZ
@given(replies)
def test_no_partition_answer_makes_its_check_raise(reply) -> None:
    verdict = check_partition_reply(reply)
    assert verdict is None or isinstance(verdict, str)


@FUZZ
@given(st.lists(replies, max_size=4))
def test_no_round_of_replies_makes_the_screen_raise(batch) -> None:
    ex = Exchange(batch, {7: 1}, {7: 1})
    SCREEN.private = True  # declined replies are screened too
    valid, clients = SCREEN.screen(ex, SCREEN.reply_check(1), server_round=1)
    assert all(isinstance(c.status, str) for c in clients.values())
    for reply in valid:  # what passes is what a strategy can use
        assert set(reply.content.array_records[keys.ARRAYS]) == set(REFERENCE)
        assert all(
            torch.isfinite(torch.from_numpy(a.numpy())).all()
            for a in reply.content.array_records[keys.ARRAYS].values()
        )
