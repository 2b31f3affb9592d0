"""Local LoRA training, per-example losses and evaluation on tiny models and real data."""

from __future__ import annotations

import math

import pytest
import torch

from client.lora_trainer import train_lora
from federated.config import TrainSettings, parse_run_config
from federated.data.encode import batches
from federated.model.evaluation import evaluate_model
from federated.model.lora import load_trainable_state, trainable_state
from federated.model.losses import loss_terms
from federated.model.workspace import client_indices, encode_indices, lora_model
from federated.protocol.wire import record_to_tensors, tensors_to_record
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from tests.model_fixtures import perturb_trainable, tiny_inputs, tiny_lora_model

LM = parse_run_config({"model.name": "tiny-llama"})
CLS = parse_run_config(
    {
        "model.name": "tiny-bert",
        "data.name": "wordnet",
        "data.num-classes": 4,
        "data.max-per-class": 100,
    }
)


def _client_data(config, split: int = 0):
    local = lora_model(config)
    model, tokenizer = local.model, local.tokenizer
    train_ids, held_out = client_indices(config, 0, 4)
    ids = train_ids if split == 0 else held_out
    return model, tokenizer, encode_indices(config, tokenizer, ids)


def test_step_count_from_steps_or_epochs() -> None:
    assert TrainSettings(local_steps=7).steps_for(1000) == 7
    assert TrainSettings(local_steps=0, local_epochs=1.5, batch_size=4).steps_for(10) == 4


@pytest.mark.parametrize("config", [LM, CLS], ids=["causal-lm", "classification"])
def test_local_training_lowers_the_loss_on_real_data(config) -> None:
    model, tokenizer, encoded = _client_data(config)
    load_trainable_state(model, trainable_state(model))
    before = evaluate_model(
        model, encoded[:32], config.task, batch_size=16, pad_token_id=tokenizer.pad_token_id
    )
    settings = TrainSettings(local_steps=15, lr=0.02, batch_size=8)
    result = train_lora(
        model,
        encoded,
        config.task,
        settings,
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    after = evaluate_model(
        model, encoded[:32], config.task, batch_size=16, pad_token_id=tokenizer.pad_token_id
    )
    assert result.steps == 15 and result.examples_seen == 15 * 8
    assert after.loss < before.loss
    assert result.peak_memory_mb > 0


def test_only_trainable_tensors_move() -> None:
    model, tokenizer, encoded = _client_data(CLS)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    train_lora(
        model,
        encoded,
        CLS.task,
        TrainSettings(local_steps=2, lr=1e-3, batch_size=4),
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name


def test_lm_loss_terms_match_transformers_token_mean() -> None:
    model = tiny_lora_model(TASK_CAUSAL_LM)
    perturb_trainable(model)
    inputs = tiny_inputs(TASK_CAUSAL_LM)
    labels = inputs["input_ids"].clone()
    labels[:, :4] = -100  # a masked prompt
    labels[inputs["attention_mask"] == 0] = -100
    batch = {**inputs, "labels": labels}
    terms = loss_terms(model, batch, TASK_CAUSAL_LM)
    reference = model(**batch).loss  # transformers: mean over every scored token of the batch
    torch.testing.assert_close(terms.mean_loss(), reference, rtol=1e-5, atol=1e-5)
    assert terms.loss_sum.shape == (2,)
    assert terms.count.tolist() == (labels[:, 1:] != -100).sum(1).tolist()


def test_evaluation_reports_perplexity_and_accuracy() -> None:
    model, tokenizer, encoded = _client_data(LM, split=1)
    result = evaluate_model(
        model, encoded, TASK_CAUSAL_LM, batch_size=8, pad_token_id=tokenizer.pad_token_id
    )
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert result.num_examples == len(encoded)
    model, tokenizer, encoded = _client_data(CLS, split=1)
    result = evaluate_model(
        model, encoded, TASK_CLASSIFICATION, batch_size=8, pad_token_id=tokenizer.pad_token_id
    )
    predictions = []
    model.eval()
    with torch.no_grad():
        for batch in batches(encoded, 8, generator=None, pad_token_id=tokenizer.pad_token_id):
            predictions += (
                model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits.argmax(-1)
                == batch["labels"]
            ).tolist()
    assert result.accuracy == pytest.approx(sum(predictions) / len(predictions))


def test_lora_state_round_trips_through_array_record() -> None:
    source = tiny_lora_model(TASK_CLASSIFICATION)
    perturb_trainable(source)
    target = tiny_lora_model(TASK_CLASSIFICATION)
    load_trainable_state(target, record_to_tensors(tensors_to_record(trainable_state(source))))
    inputs = tiny_inputs(TASK_CLASSIFICATION)
    source.eval(), target.eval()
    torch.testing.assert_close(target(**inputs).logits, source(**inputs).logits)
