"""zo.frozen-dtype: the matrices stored in bfloat16 beside float32 trained entries replay to the
float32 model's entries bit for bit, compute what a float32 model with rounded frozen entries
computes (tied matrices alike), and save the bytes they report."""

from __future__ import annotations

import pytest
import torch

from federated.config import ConfigError, parse_run_config
from federated.data.encode import collate
from federated.zo.frozen_precision import SparseOverlay
from federated.zo.workspace import forget_zo_model, sensitive_mask, zo_model

SENSITIVE = {
    "mode": "zo",
    "strategy.name": "fedkseed",
    "model.name": "tiny-llama",
    "zo.params": "sensitive",
    "zo.sparse-fraction": 0.01,
    "zo.pool-size": 16,
    "zo.calibration-examples": 8,
    "train.batch-size": 4,
    "zo.lr": 1e-2,
}
BATCH = collate(
    [
        {"input_ids": [5, 9, 33, 2, 71], "attention_mask": [1] * 5, "labels": [-100] * 5},
        {"input_ids": [8, 1, 4], "attention_mask": [1] * 3, "labels": [-100] * 3},
    ],
    pad_token_id=0,
)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=BATCH["input_ids"], attention_mask=BATCH["attention_mask"]).logits


def _trained_model(frozen_dtype: str) -> tuple:
    forget_zo_model()
    config = parse_run_config({**SENSITIVE, "zo.frozen-dtype": frozen_dtype})
    mask = sensitive_mask(config)
    zo = zo_model(config, mask)
    zo.load(torch.linspace(-1.0, 1.0, len(zo.pool)))
    return zo, mask


def test_low_precision_matrices_replay_and_compute_as_the_float32_model_says() -> None:
    full, mask = _trained_model("float32")
    entries = {
        n: p.detach().reshape(-1)[mask[n].long()].clone()
        for n, p in full.model.named_parameters()
        if n in mask
    }
    # What the low-precision model must compute: frozen entries rounded, trained ones exact.
    for name, param in full.model.named_parameters():
        if param.dim() >= 2:
            rounded = param.detach().to(torch.bfloat16).to(torch.float32)
            if name in mask:
                rounded.view(-1)[mask[name].long()] = entries[name]
            param.data.copy_(rounded)
    expected = _logits(full.model)
    vectors = {n: p.detach().clone() for n, p in full.model.named_parameters() if p.dim() < 2}

    low, _ = _trained_model("bfloat16")
    overlays = {
        n.removesuffix(".parametrizations.weight"): m
        for n, m in low.model.named_modules()
        if n.endswith(".parametrizations.weight")
    }
    for name, values in entries.items():
        assert torch.equal(overlays[name.removesuffix(".weight")][0].values, values)
    for name, param in low.model.named_parameters():
        if param.dim() < 2:
            assert torch.equal(param, vectors[name])
    assert torch.equal(_logits(low.model), expected)
    # The tied output matrix is the embedding, trained entries included.
    assert isinstance(low.model.lm_head.parametrizations.weight[0], SparseOverlay)
    assert torch.equal(low.model.lm_head.weight, low.model.model.embed_tokens.weight)


def test_the_bytes_saved_are_the_halved_matrices_less_the_trained_entries() -> None:
    full, mask = _trained_model("float32")
    before = sum(p.numel() * p.element_size() for p in full.model.parameters())
    low, _ = _trained_model("bfloat16")
    after = sum(p.numel() * p.element_size() for p in low.model.parameters())
    trained = sum(
        t.tensor.numel() * 4 for t in low.targets if not isinstance(t.tensor, torch.nn.Parameter)
    )
    assert trained == 4 * sum(m.numel() for m in mask.values())
    assert low.frozen_bytes_saved == before - after - trained > 0.45 * before


@pytest.mark.parametrize("params", ["full", "lora"])
def test_a_lower_precision_needs_sparse_or_sensitive_training(params: str) -> None:
    with pytest.raises(ConfigError, match="zo.frozen-dtype"):
        parse_run_config({**SENSITIVE, "zo.params": params, "zo.frozen-dtype": "bfloat16"})
