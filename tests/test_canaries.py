"""Canaries of the privacy audit: the same on every party, half inserted, each inserted one
dealt to exactly one client; and a tiny model trained without DP for many steps on few records
gives its inserted canaries away to the audit."""

from __future__ import annotations

import pytest
import torch

from client.lora_trainer import train_lora
from federated.config import parse_run_config
from federated.model.presets import load_tokenizer
from federated.model.workspace import encode_records
from federated.privacy.canaries import canary, client_canaries, inserted
from federated.tasks import TASK_CLASSIFICATION
from server.audit import run_audit
from tests.model_fixtures import TINY_NUM_LABELS, tiny_lora_model

CANARIES = 200


def test_canaries_are_fixed_by_the_seed_half_inserted_and_dealt_once() -> None:
    config = parse_run_config({"model.name": "tiny-llama", "audit.canaries": CANARIES})
    texts = [canary(config, i, 0).target for i in range(CANARIES)]
    assert len(set(texts)) == CANARIES
    assert texts == [canary(config, i, 0).target for i in range(CANARIES)]
    other = parse_run_config({"model.name": "tiny-llama", "audit.canaries": CANARIES, "seed": 1})
    assert canary(other, 0, 0).target != texts[0]
    flags = [inserted(config, i) for i in range(CANARIES)]
    assert 70 < sum(flags) < 130  # a fair coin: 4.2 standard deviations either side
    dealt = [c.target for p in range(7) for c in client_canaries(config, p, 7, 0)]
    assert sorted(dealt) == sorted(t for t, flag in zip(texts, flags, strict=True) if flag)
    classifier = parse_run_config(
        {
            "model.name": "tiny-bert",
            "data.name": "wordnet",
            "data.num-classes": 3,
            "audit.canaries": 8,
        }
    )
    labels = {canary(classifier, i, 3).label for i in range(8)}
    assert labels <= {0, 1, 2} and len(labels) > 1


def test_a_model_trained_without_dp_on_its_canaries_is_caught_by_the_audit() -> None:
    # Mislabelled canaries, a tiny classifier trained on nothing else for many steps.
    config = parse_run_config(
        {
            "model.name": "tiny-bert",
            "data.name": "wordnet",
            "data.num-classes": TINY_NUM_LABELS,
            "audit.canaries": 40,
            "train.local-steps": 120,
            "train.lr": 5e-2,
            "train.batch-size": 8,
        }
    )
    model = tiny_lora_model(TASK_CLASSIFICATION)
    for module in model.modules():  # no dropout: the same run whatever ran before
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    tokenizer = load_tokenizer("tiny-bert")
    members = client_canaries(config, 0, 1, TINY_NUM_LABELS)
    train_lora(
        model,
        encode_records(config, tokenizer, members),
        TASK_CLASSIFICATION,
        config.train,
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    record = run_audit(model, tokenizer, config, rounds=[])
    assert record["inserted"] == len(members)
    assert record["mean_loss_inserted"] < record["mean_loss_held_out"]
    assert record["epsilon_lower_bound"] > 0.5  # chance, 10 of 20 right, rules out nothing
    assert record["accountant_epsilon"] == {}  # no DP: nothing certified


@pytest.mark.parametrize("canaries", [0, 3])
def test_a_run_without_canaries_deals_none(canaries: int) -> None:
    config = parse_run_config({"model.name": "tiny-llama", "audit.canaries": canaries})
    dealt = sum(len(client_canaries(config, p, 2, 0)) for p in range(2))
    assert dealt == sum(inserted(config, i) for i in range(canaries))
