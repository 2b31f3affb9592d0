"""The same config and seed, launched twice through Flower's simulation engine, give the same
metrics and the same final weights: clients are drawn by partition, their batches and dropout
by (seed, partition, round), and the server sums their updates in partition order."""

from __future__ import annotations

import pytest

from tests.run_files import assert_same_outcomes, assert_same_tensors, checkpoint_tensors, rounds
from tests.simulate import simulate

pytestmark = pytest.mark.slow

CONFIG = {
    "model.name": "tiny-bert",
    "data.name": "wordnet",
    "data.num-classes": 3,
    "data.max-per-class": 60,
    "data.partitioner": "dirichlet",
    "num-server-rounds": 2,
    "train.local-steps": 3,
    "lora.dropout": 0.1,
    "strategy.fraction-train": 0.5,
    "strategy.min-train-nodes": 2,
    "strategy.fraction-evaluate": 0.5,
    "seed": 7,
}
CLIENTS = 5


def test_two_launches_with_the_same_seed_give_the_same_metrics_and_weights(tmp_path) -> None:
    first, second = (
        simulate({**CONFIG, "output-dir": str(tmp_path), "run-name": name}, CLIENTS)
        for name in ("first", "second")
    )
    assert_same_outcomes(rounds(first), rounds(second))
    assert_same_tensors(checkpoint_tensors(first), checkpoint_tensors(second))
    trained = rounds(first)
    assert all(r["clients_sampled"] < CLIENTS for r in trained[1:])  # the draw mattered
    assert trained[-1]["test_loss"] != trained[0]["test_loss"]  # the runs trained something
