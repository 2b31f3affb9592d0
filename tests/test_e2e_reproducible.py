"""The same config and seed, launched twice through Flower's simulation engine, give the same
metrics and the same final weights: clients are drawn by partition, their batches and dropout
by (seed, partition, round), and the server sums their updates in partition order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.simulate import simulate

pytestmark = pytest.mark.slow

CONFIG = {
    "model.name": "tiny-bert", "data.name": "wordnet", "data.num-classes": 3,
    "data.max-per-class": 60, "data.partitioner": "dirichlet", "num-server-rounds": 2,
    "train.local-steps": 3, "lora.dropout": 0.1, "strategy.fraction-train": 0.5,
    "strategy.min-train-nodes": 2, "strategy.fraction-evaluate": 0.5,
    "seed": 7,
}  # fmt: skip
CLIENTS = 5


def _launch(tmp_path: Path, name: str) -> tuple[list[dict], dict[str, torch.Tensor]]:
    folder = simulate({**CONFIG, "output-dir": str(tmp_path), "run-name": name}, CLIENTS)
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return rounds, load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def _outcome(record: dict) -> dict:
    """What must repeat: the losses and, per partition, who trained and what it reported."""
    clients = [
        (c["partition_id"], c["status"], c["train_loss"], c["num_examples"], c["eval_status"])
        for c in record.get("clients", [])
    ]
    losses = {k: v for k, v in record.items() if k.endswith(("_loss", "_accuracy"))}
    return {**losses, "clients": clients}


def test_two_launches_with_the_same_seed_give_the_same_metrics_and_weights(tmp_path) -> None:
    first, first_weights = _launch(tmp_path, "first")
    second, second_weights = _launch(tmp_path, "second")
    assert [_outcome(r) for r in first] == [_outcome(r) for r in second]
    assert first_weights.keys() == second_weights.keys()
    for name, tensor in first_weights.items():
        assert torch.equal(tensor, second_weights[name]), name
    assert all(r["clients_sampled"] < CLIENTS for r in first[1:])  # the draw mattered
    assert first[-1]["test_loss"] != first[0]["test_loss"]  # the runs trained something
