"""Ways a hostile or broken client can corrupt its reply, by name: what the simulated apps'
corrupting mod does to the reply of a partition it is told to corrupt (``tests.simulate``).

Each takes the honest reply's content, the node state and what the server sent, and returns
the content to send.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from federated.protocol import message_keys as keys
from federated.protocol.wire import record_to_tensors, tensors_to_record

Corruption = Callable[[RecordDict, RecordDict, RecordDict], RecordDict]


def _tensors(fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Corruption:
    def corrupt(content: RecordDict, state: RecordDict, sent: RecordDict) -> RecordDict:
        content[keys.ARRAYS] = tensors_to_record(fn(record_to_tensors(content[keys.ARRAYS])))
        return content

    return corrupt


def _first(tensors: dict[str, torch.Tensor], value: torch.Tensor | None) -> dict:
    name = sorted(tensors)[0]
    out = dict(tensors)
    if value is None:
        del out[name]
    else:
        out[name] = value
    return out


def _metrics(fn: Callable[[dict], dict]) -> Corruption:
    def corrupt(content: RecordDict, state: RecordDict, sent: RecordDict) -> RecordDict:
        content[keys.METRICS] = MetricRecord(fn(dict(content[keys.METRICS])))
        return content

    return corrupt


def _float64(content: RecordDict, state: RecordDict, sent: RecordDict) -> RecordDict:
    tensors = record_to_tensors(content[keys.ARRAYS])
    content[keys.ARRAYS] = ArrayRecord({k: Array(v.double().numpy()) for k, v in tensors.items()})
    return content


def _oversize(content: RecordDict, state: RecordDict, sent: RecordDict) -> RecordDict:
    record = content[keys.ARRAYS]
    name = sorted(record)[0]
    big = record[name]
    record[name] = Array(
        dtype=big.dtype, shape=tuple(big.shape), stype=big.stype, data=big.data + bytes(20_000_000)
    )
    return content


def _second_record(content: RecordDict, state: RecordDict, sent: RecordDict) -> RecordDict:
    content["more-metrics"] = MetricRecord({"x": 1.0})
    return content


def _config_record(content: RecordDict, state: RecordDict, sent: RecordDict) -> RecordDict:
    content["config"] = ConfigRecord({"x": 1})
    return content


def _arrays_in_eval(content: RecordDict, state: RecordDict, sent: RecordDict) -> RecordDict:
    content[keys.ARRAYS] = ArrayRecord({"x": Array(np.zeros(3, dtype=np.float32))})
    return content


_LAST = "test-last-reply"


def _replay(content: RecordDict, state: RecordDict, sent: RecordDict) -> RecordDict:
    """Round 1 honest (and kept); later rounds: the kept reply again."""
    if _LAST in state.array_records:
        content[keys.ARRAYS] = state.array_records[_LAST]
    else:
        state[_LAST] = content[keys.ARRAYS]
    return content


def _flipped(scale: float) -> Corruption:
    """The client's move from what it was sent, reversed and scaled: a poisoned update that
    passes every check when ``scale`` is small."""

    def corrupt(content: RecordDict, state: RecordDict, sent: RecordDict) -> RecordDict:
        upload = record_to_tensors(content[keys.ARRAYS])
        start = record_to_tensors(sent[keys.ARRAYS])
        flipped = {k: start[k] - scale * (v - start[k]) for k, v in upload.items()}
        content[keys.ARRAYS] = tensors_to_record(flipped)
        return content

    return corrupt


def _zo_pairs(indices: torch.Tensor, scalars: torch.Tensor) -> Corruption:
    return _tensors(lambda _: {keys.SEED_INDICES: indices, keys.SEED_SCALARS: scalars})


def _scaled(tensors: dict[str, torch.Tensor], key: str, value: float) -> dict:
    return {**tensors, key: tensors[key] * value}


TRAIN: dict[str, Corruption] = {
    "nan": _tensors(lambda t: _first(t, torch.full_like(t[sorted(t)[0]], float("nan")))),
    "inf": _tensors(lambda t: _first(t, torch.full_like(t[sorted(t)[0]], float("inf")))),
    "wrong-shape": _tensors(lambda t: _first(t, torch.zeros(3, 5))),
    "wrong-dtype": _float64,
    "missing-tensor": _tensors(lambda t: _first(t, None)),
    "extra-tensor": _tensors(lambda t: {**t, "extra.weight": torch.zeros(2)}),
    "renamed-tensor": _tensors(lambda t: {f"x.{k}": v for k, v in t.items()}),
    "oversize": _oversize,
    "extra-metric": _metrics(lambda m: {**m, "extra": 1.0}),
    "missing-metric": _metrics(lambda m: {k: v for k, v in m.items() if k != keys.PARTITION_ID}),
    "list-metric": _metrics(lambda m: {**m, keys.TRAIN_STEPS: [1, 2]}),
    "second-metric-record": _second_record,
    "config-record": _config_record,
    "inflated-examples": _metrics(lambda m: {**m, keys.NUM_EXAMPLES: 1_000_000_000}),
    "plus-50": _tensors(lambda t: {k: v + 50.0 for k, v in t.items()}),
    "replay": _replay,
    "wrong-mode": _zo_pairs(torch.zeros(2, dtype=torch.int64), torch.zeros(2)),
    "other-partition": _metrics(lambda m: {**m, keys.PARTITION_ID: int(m[keys.PARTITION_ID] == 0)}),
}

# Poisoned updates that pass the checks, for robust aggregation.
POISONED: dict[str, Corruption] = {
    "sign-flip": _flipped(1.0),
    "sign-flip-x3": _flipped(3.0),
    "scaled-100": _flipped(-100.0),
}

ZO_TRAIN: dict[str, Corruption] = {
    "huge-scalars": _tensors(lambda t: _scaled(t, keys.SEED_SCALARS, 1e30)),
    "seed-out-of-range": _tensors(lambda t: {**t, keys.SEED_INDICES: t[keys.SEED_INDICES] + 10**6}),
    "too-many-pairs": _zo_pairs(torch.zeros(500, dtype=torch.int64), torch.zeros(500)),
    "int32-indices": _tensors(lambda t: {**t, keys.SEED_INDICES: t[keys.SEED_INDICES].int()}),
    "nan-scalars": _tensors(lambda t: _scaled(t, keys.SEED_SCALARS, float("nan"))),
    "replay": _replay,
}

EVALUATE: dict[str, Corruption] = {
    "nan-loss": _metrics(lambda m: {**m, keys.EVAL_LOSS: float("nan")}),
    "extra-metric": _metrics(lambda m: {**m, "extra": 1.0}),
    "missing-metric": _metrics(lambda m: {k: v for k, v in m.items() if k != keys.EVAL_LOSS}),
    "arrays": _arrays_in_eval,
    "inflated-examples": _metrics(lambda m: {**m, keys.NUM_EXAMPLES: 1_000_000_000}),
    "second-metric-record": _second_record,
}


def _no_partition(content: RecordDict, state: RecordDict, sent: RecordDict) -> RecordDict:
    raise ValueError("this SuperNode has no partition")


# Answers to the server's question at start: which partition of how many a node holds.
QUERY: dict[str, Corruption] = {
    "out-of-range": _metrics(lambda m: {**m, keys.PARTITION_ID: m[keys.NUM_PARTITIONS]}),
    "wrong-count": _metrics(lambda m: {**m, keys.NUM_PARTITIONS: m[keys.NUM_PARTITIONS] + 1}),
    "no-partition": _no_partition,
}

KINDS = {
    "train": {**TRAIN, **POISONED},
    "zo-train": ZO_TRAIN,
    "evaluate": EVALUATE,
    "query": QUERY,
}
