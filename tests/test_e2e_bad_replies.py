"""Every kind of bad reply, through Flower's simulation engine: each is rejected with its reason,
on training and on evaluation replies, and the run finishes with the good clients and a finite
model. One client per kind, two rounds (a replay needs a first round to replay)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests import run_files
from tests.bad_replies import EVALUATE, QUERY, TRAIN, ZO_TRAIN
from tests.simulate import simulate

pytestmark = pytest.mark.slow

GOOD = 3

# What the server says about each kind (a part of its reason).
TRAIN_REASONS = {
    "nan": "non-finite values",
    "inf": "non-finite values",
    "wrong-shape": "has shape (3, 5)",
    "wrong-dtype": "has dtype float64, expected float32",
    "missing-tensor": "tensor names differ: missing",
    "extra-tensor": "unexpected ['extra.weight']",
    "renamed-tensor": "tensor names differ",
    "oversize": "bytes, more than its shape",
    "extra-metric": "metric keys differ: unexpected ['extra']",
    "missing-metric": "metric keys differ: missing ['partition-id']",
    "list-metric": "metric 'train-steps' is not a number",
    "second-metric-record": "expected one metric record 'metrics'",
    "config-record": "unexpected config records ['config']",
    "inflated-examples": "claims 1e+09 examples; partition",
    "plus-50": "moved a weight by 50",
    "replay": "replays an update the server accepted in round 1",
    "wrong-mode": "tensor names differ",
    "other-partition": "claims partition",
}
ZO_REASONS = {
    "huge-scalars": "exceeds server.max-zo-scalar",
    "seed-out-of-range": "seed index outside the pool",
    "too-many-pairs": "steps reported, at most (4,)",
    "int32-indices": "has dtype int32, expected int64",
    "nan-scalars": "non-finite scalars",
    "replay": "replays an update the server accepted in round 1",
}
EVAL_REASONS = {
    "nan-loss": "metric 'eval-loss' is not finite",
    "extra-metric": "metric keys differ: unexpected ['extra']",
    "missing-metric": "metric keys differ: missing ['eval-loss']",
    "arrays": "expected no array record",
    "inflated-examples": "claims 1e+09 examples; eval.max-examples is 16",
    "second-metric-record": "expected one metric record 'metrics'",
}


def _plan(kinds: list[str]) -> dict[int, str]:
    return dict(enumerate(kinds))


def _statuses(record: dict, key: str) -> list[str]:
    return [c[key] for c in record["clients"] if c.get(key)]


def test_the_reason_tables_cover_every_corruption() -> None:
    assert set(TRAIN_REASONS) == set(TRAIN) and set(ZO_REASONS) == set(ZO_TRAIN)
    assert set(EVAL_REASONS) == set(EVALUATE)
    assert len(TRAIN) + len(ZO_TRAIN) + len(EVALUATE) >= 15


def test_bad_lora_replies_are_rejected_and_the_good_clients_train(tmp_path: Path) -> None:
    kinds = sorted(TRAIN)
    config = {
        "model.name": "tiny-bert",
        "data.name": "wordnet",
        "data.num-classes": 3,
        "data.max-per-class": 200,
        "data.partitioner": "iid",
        "num-server-rounds": 2,
        "train.local-steps": 2,
        "eval.max-examples": 16,
        "strategy.min-available-nodes": len(kinds) + GOOD,
        "output-dir": str(tmp_path),
        "run-name": "bad-lora",
    }
    corrupt = {"train": _plan(kinds), "evaluate": _plan(sorted(EVALUATE))}
    folder = simulate(config, num_clients=len(kinds) + GOOD, corrupt=corrupt)
    rounds = run_files.rounds(folder)[1:]
    assert len(rounds) == 2
    for record in rounds:
        assert math.isfinite(record["test_loss"])
        statuses = _statuses(record, "status")
        for kind in kinds:
            if kind != "replay" or record["round"] == 2:
                assert any(TRAIN_REASONS[kind] in s for s in statuses), kind
        accepted = GOOD + (record["round"] == 1)  # the replaying client is honest at first
        assert record["clients_accepted"] == accepted
        evaluated = _statuses(record, "eval_status")
        for kind, reason in EVAL_REASONS.items():
            assert any(reason in s for s in evaluated), kind
        assert record["evaluations_rejected"] == len(EVALUATE)
        assert record["held_out_loss"] is not None and math.isfinite(record["held_out_loss"])
    final = load_file(str(folder / "checkpoint.safetensors"))
    assert all(t.isfinite().all() for t in final.values())


def test_bad_zeroth_order_replies_are_rejected(tmp_path: Path) -> None:
    """Also nodes whose answer at start (which partition they hold) is unusable: they are left
    out of sampling, and the run goes on with the others."""
    kinds, lying = sorted(ZO_TRAIN), sorted(QUERY)
    sound = len(kinds) + GOOD
    config = {
        "model.name": "tiny-bert",
        "data.name": "wordnet",
        "data.num-classes": 3,
        "data.max-per-class": 100,
        "data.partitioner": "iid",
        "num-server-rounds": 2,
        "mode": "zo",
        "strategy.name": "fedkseed",
        "zo.params": "lora",
        "zo.pool-size": 64,
        "zo.lr": 1e-3,
        "train.local-steps": 4,
        "strategy.fraction-evaluate": 0.0,
        "strategy.min-available-nodes": sound,
        "output-dir": str(tmp_path),
        "run-name": "bad-zo",
    }
    corrupt = {"train": _plan(kinds), "query": {sound + i: k for i, k in enumerate(lying)}}
    folder = simulate(config, num_clients=sound + len(lying), corrupt=corrupt)
    left_out = sorted(n["reason"] for n in run_files.rounds(folder)[0]["nodes_left_out"])
    assert len(left_out) == len(lying)
    total = sound + len(lying)
    assert f"claims {total + 1} partitions, the federation has {total}" in left_out[0]
    assert "no partition" in left_out[1] and "is not a partition" in left_out[2]
    for record in run_files.rounds(folder)[1:]:
        assert {c["partition_id"] for c in record["clients"]} == set(range(sound))
        statuses = _statuses(record, "status")
        for kind in kinds:
            if kind != "replay" or record["round"] == 2:
                assert any(ZO_REASONS[kind] in s for s in statuses), kind
        assert record["clients_accepted"] == GOOD + (record["round"] == 1)
        assert math.isfinite(record["test_loss"])


def test_a_sign_flipped_client_passes_the_checks_and_the_median_still_learns(
    tmp_path: Path,
) -> None:
    """A poisoned update that is plausible in every field is accepted: what the checks cannot
    stop is robust aggregation's job (measured in benchmarks/robustness); with the coordinate
    median the run goes end to end and learns."""
    base = {
        "model.name": "tiny-bert",
        "data.name": "wordnet",
        "data.num-classes": 3,
        "data.max-per-class": 100,
        "data.partitioner": "iid",
        "num-server-rounds": 2,
        "train.local-steps": 4,
        "train.lr": 0.01,
        "strategy.fraction-evaluate": 0.0,
        "strategy.min-available-nodes": 5,
        "output-dir": str(tmp_path),
    }
    corrupt = {"train": {0: "sign-flip"}}
    plain = run_files.rounds(simulate({**base, "run-name": "mean"}, 5, corrupt=corrupt))
    median = run_files.rounds(
        simulate({**base, "run-name": "median", "robust.method": "median"}, 5, corrupt=corrupt)
    )
    for rounds in (plain, median):
        assert all(r["clients_accepted"] == 5 for r in rounds[1:])  # it looked honest
    assert median[-1]["test_loss"] < median[0]["test_loss"]
