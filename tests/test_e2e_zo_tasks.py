"""Zeroth-order runs that classify, through Flower's simulation engine: a hybrid head that
trains first-order beside seeds on the sensitive entries of bfloat16 matrices (the head a few
KB beside the pairs, the mask sent to each node once), and WordNet posed as generation to a
causal LM at the rate the server probed, whose accuracy the server reports as a classifier's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from federated.config import parse_run_config
from federated.model.presets import load_base_model
from federated.protocol import message_keys as keys
from federated.tasks import TASK_CLASSIFICATION
from federated.zo.hybrid import WIRE_PREFIX
from server.zo_rate import zo_lr_probe
from tests.simulate import simulate

pytestmark = pytest.mark.slow

CLIENTS, STEPS, CLASSES, HIDDEN = 3, 8, 4, 64  # tiny-bert's pooled width
ZO = {
    "mode": "zo",
    "strategy.name": "fedkseed",
    "num-server-rounds": 2,
    "data.name": "wordnet",
    "data.num-classes": CLASSES,
    "data.max-per-class": 40,
    "zo.pool-size": 64,
    "zo.eps": 1e-2,
    "zo.lr": 1e-3,
    "train.local-steps": STEPS,
    "train.batch-size": 8,
    "eval.max-examples": 32,
    "strategy.fraction-evaluate": 0.0,
}


def _rounds(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_hybrid_head_and_sensitive_entries_learn_and_the_mask_goes_out_once(
    tmp_path: Path,
) -> None:
    config = {
        **ZO,
        "model.name": "tiny-bert",
        "zo.hybrid": "head",
        "zo.hybrid-lr": 0.1,
        "zo.params": "sensitive",
        "zo.sparse-fraction": 0.01,
        "zo.frozen-dtype": "bfloat16",
        "zo.calibration-examples": 16,
        "output-dir": str(tmp_path),
        "run-name": "hybrid",
    }
    folder = simulate(config, CLIENTS)
    rounds = _rounds(folder)
    assert all(r["clients_accepted"] == CLIENTS for r in rounds[1:])
    # A random tiny body gives the head little to learn from beyond the clients' own classes:
    # the clients' loss falls, and the server's head is the clients' average, not the seed's.
    assert rounds[2]["train_loss"] < rounds[1]["train_loss"]
    assert "test_accuracy" in rounds[-1]
    head_bytes = 4 * (CLASSES * HIDDEN + CLASSES)
    for r in rounds[1:]:
        # The pairs (12 bytes a step), the head, and Flower's headers and the metrics.
        assert r["train_bytes_up"] / CLIENTS < 12 * STEPS + head_bytes + 3000
    mask = load_file(folder / "zo_mask.safetensors")
    mask_entries = sum(m.numel() for m in mask.values())
    mask_bytes = 4 * mask_entries
    assert rounds[1]["train_bytes_down"] / CLIENTS > mask_bytes  # round 1: the mask goes out
    # Then the changed sums and the head alone.
    assert rounds[2]["train_bytes_down"] / CLIENTS < 8 * CLIENTS * STEPS + head_bytes + 3000
    saved = load_file(folder / "zo_sums.safetensors")
    assert set(saved) == {
        keys.SEED_SUMS,
        f"{WIRE_PREFIX}classifier.bias",
        f"{WIRE_PREFIX}classifier.weight",
    }
    assert json.loads((folder / "zo_model.json").read_text())["hybrid"] == "head"
    seeded = load_base_model("tiny-bert", TASK_CLASSIFICATION, num_labels=CLASSES, seed=0)
    moved = saved[f"{WIRE_PREFIX}classifier.weight"] - seeded.classifier.weight.detach()
    assert float(moved.abs().max()) > 1e-3
    # Every device stored the body's matrices in bfloat16 (the head stays float32): half their
    # bytes saved, less the trained entries kept in float32 beside them.
    saved = json.loads((folder / "summary.json").read_text())["zo_frozen_bytes_saved"]
    body = sum(p.numel() for p in seeded.parameters() if p.dim() >= 2) - CLASSES * HIDDEN
    assert saved == 2 * body - 4 * mask_entries


def test_wordnet_posed_as_generation_at_the_probed_rate_reports_a_classifiers_accuracy(
    tmp_path: Path,
) -> None:
    config = {
        **ZO,
        "model.name": "tiny-llama",
        "model.task": "classification-as-generation",
        "zo.params": "lora",
        "zo.lr": 0.0,
        "zo.calibration-examples": 16,
        "output-dir": str(tmp_path),
        "run-name": "verbalized",
    }
    folder = simulate(config, CLIENTS)
    rounds = _rounds(folder)
    assert all(r["clients_accepted"] == CLIENTS for r in rounds[1:])
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rounds)
    assert rounds[-1]["test_loss"] != rounds[0]["test_loss"]  # the steps moved the model
    # zo.lr = 0: the server probed the rate (the same probe here gives the same one), replayed
    # and saved at it; a checkpoint holds it for a resumed run.
    probed = zo_lr_probe(parse_run_config(config)).lr
    assert json.loads((folder / "zo_model.json").read_text())["lr"] == probed
    assert json.loads((folder / "summary.json").read_text())["config"]["zo.lr"] == probed
