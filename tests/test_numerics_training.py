"""Training as train.precision, train.gradient-checkpointing and model.quantization say, on the
CPU (what CI has): gradients against the float32 definition, k-bit weights against the ones
they quantize, the refusals of what a trainer cannot do, and the device a process resolves."""

from __future__ import annotations

import json
from functools import cache

import pytest
import torch
from safetensors.torch import load_file

from client.dp_lora_trainer import train_lora_dp
from client.lora_trainer import train_lora
from federated.config import ConfigError, default_flat_config, parse_run_config
from federated.config.checks import check_combinations
from federated.data.encode import batches
from federated.model.compute import autocast, resolve_device
from federated.model.evaluation import evaluate_model
from federated.model.losses import loss_terms
from federated.model.numerics_loading import bitsandbytes
from federated.model.workspace import client_indices, encode_indices, lora_model
from strategies.registry import check_strategy
from tests.in_process import run_federation


def _config(**settings):
    return parse_run_config({**default_flat_config(), "model.name": "tiny-llama", **settings})


def _model_and_data(config, examples: int = 16):
    local = lora_model(config, fresh=True)
    train, _ = client_indices(config, 0, 4)
    return local, encode_indices(config, local.tokenizer, train[:examples])


@cache
def _float32_gradients() -> dict[str, torch.Tensor]:
    """The gradient of the first four examples in float32, which each form is held to."""
    exact = _config(**{"lora.dropout": 0.0})
    local, encoded = _model_and_data(exact, examples=4)
    return _gradients(local, encoded, exact)


def _gradients(local, encoded, config) -> dict[str, torch.Tensor]:
    batch = next(
        iter(batches(encoded, 8, generator=None, pad_token_id=local.tokenizer.pad_token_id))
    )
    local.model.train()
    local.model.zero_grad()
    loss_terms(local.model, batch, config.task).mean_loss().backward()
    return {
        name: p.grad.clone() for name, p in local.model.named_parameters() if p.grad is not None
    }


def test_gradient_checkpointing_gives_the_gradients_of_the_plain_backward_pass() -> None:
    plain = _config(**{"lora.dropout": 0.0})
    recomputed = _config(**{"lora.dropout": 0.0, "train.gradient-checkpointing": True})
    local, encoded = _model_and_data(plain)
    expected = _gradients(local, encoded, plain)
    local, encoded = _model_and_data(recomputed)
    assert local.model.base_model.model.is_activation_checkpointing
    got = _gradients(local, encoded, recomputed)
    assert got.keys() == expected.keys() and expected
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=name)


FORMS = [
    ({"train.precision": "bf16"}, torch.bfloat16, 0.99),
    ({"train.precision": "fp16"}, torch.float16, 0.999),
    ({"model.quantization": "4bit"}, torch.uint8, 0.9),
    ({"model.quantization": "8bit", "train.precision": "bf16"}, torch.int8, 0.9),
    ({"model.quantization": "4bit", "train.gradient-checkpointing": True}, torch.uint8, 0.9),
]


@pytest.mark.parametrize(
    "settings, base_dtype, cosine",
    FORMS,
    ids=["bf16", "fp16", "4bit", "8bit-bf16", "4bit-checkpointing"],
)
def test_each_form_trains_float32_factors_along_the_float32_gradient(
    settings, base_dtype, cosine
) -> None:
    """After an evaluation (as every round has), a step's gradient is float32's within the
    form's error: rounding (bf16, fp16) or the base's quantization (4 and 8 bits)."""
    expected = _float32_gradients()
    config = _config(**{"lora.dropout": 0.0, **settings})
    local, encoded = _model_and_data(config, examples=4)
    params = dict(local.model.named_parameters())
    q = "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"
    assert params[q].dtype == base_dtype  # the base as the setting holds it
    assert {p.dtype for p in params.values() if p.requires_grad} == {torch.float32}
    evaluate_model(
        local.model,
        encoded,
        config.task,
        batch_size=8,
        pad_token_id=local.tokenizer.pad_token_id,
        precision=config.train.precision,
    )
    with autocast(torch.device("cpu"), config.train.precision):
        got = _gradients(local, encoded, config)
    assert got.keys() == expected.keys()
    flat = torch.cat([got[k].flatten() for k in expected])
    reference = torch.cat([expected[k].flatten() for k in expected])
    assert torch.nn.functional.cosine_similarity(flat, reference, dim=0) > cosine


def test_fp16_steps_scale_the_loss_and_move_the_factors() -> None:
    config = _config(**{"train.precision": "fp16", "train.local-steps": 2, "train.lr": 0.02})
    local, encoded = _model_and_data(config, examples=8)
    start = {k: v.clone() for k, v in local.model.named_parameters() if v.requires_grad}
    result = train_lora(
        local.model,
        encoded,
        config.task,
        config.train,
        pad_token_id=local.tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.steps == 2 and 0 < result.loss < 20
    after = dict(local.model.named_parameters())
    b_keys = [k for k in start if "lora_B" in k]
    assert b_keys and all(not after[k].equal(start[k]) for k in b_keys)
    assert all(torch.isfinite(after[k]).all() for k in start)


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_k_bit_weights_are_the_float32_ones_within_the_quantization_error(bits) -> None:
    exact = lora_model(_config(), fresh=True).model
    quantized = lora_model(_config(**{"model.quantization": bits}), fresh=True).model
    bnb = bitsandbytes()
    name = "base_model.model.model.layers.1.mlp.down_proj"
    weight = dict(exact.named_modules())[name].weight.detach()
    layer = dict(quantized.named_modules())[name]
    if bits == "4bit":
        assert isinstance(layer, bnb.nn.Linear4bit)
        restored = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        # NF4 with blocks of 64: an entry is off by at most half the widest gap between two of
        # its 16 levels (0.3038, from -1 to -0.6962, in units of the block's largest magnitude),
        # and a little more for that magnitude's own 8-bit code (double quantization).
        bound = (0.5 * 0.3038 + 0.01) * weight.abs().max()
    else:
        assert isinstance(layer, bnb.nn.Linear8bitLt)
        scale = layer.weight.SCB.unsqueeze(1) / 127  # a float scale per output row
        restored = layer.weight.data.float() * scale
        bound = 0.5 * scale.max() + 1e-6  # rounding to the nearest of 255 levels
    error = (restored.float() - weight).abs().max()
    assert 0 < error <= bound


def test_record_level_dp_trains_a_4_bit_model_in_bf16() -> None:
    config = _config(**{"model.quantization": "4bit", "train.precision": "bf16"})
    local, encoded = _model_and_data(config)
    start = {k: v.clone() for k, v in local.model.named_parameters() if v.requires_grad}
    result = train_lora_dp(
        local.model,
        encoded,
        config.task,
        config.train,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        sample_rate=0.25,
        expected_batch=4,
        mode="hooks",
        pad_token_id=local.tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.steps == config.train.local_steps and result.loss > 0
    moved = [
        k for k, v in local.model.named_parameters() if v.requires_grad and not v.equal(start[k])
    ]
    assert len(moved) == len(start)  # noise reaches every factor


@pytest.mark.parametrize(
    "settings, line",
    [
        (
            {
                "mode": "zo",
                "strategy.name": "fedkseed",
                "train.local-steps": 2,
                "train.precision": "bf16",
            },
            "mode zo compares two losses a tiny step apart",
        ),
        (
            {
                "mode": "zo",
                "strategy.name": "fedkseed",
                "train.local-steps": 2,
                "model.quantization": "4bit",
            },
            "which k-bit weights cannot take; use zo.params = lora",
        ),
        (
            {"dp.mode": "record", "dp.noise-multiplier": 1.0, "train.gradient-checkpointing": True},
            "opacus's hooks, which a recomputed forward would run twice",
        ),
        (
            {"dp.mode": "record", "dp.noise-multiplier": 1.0, "train.precision": "fp16"},
            "fp16's loss scaling would clip scaled ones; use bf16",
        ),
    ],
    ids=["zo-bf16", "zo-full-4bit", "dp-checkpointing", "dp-fp16"],
)
def test_what_a_trainer_cannot_do_is_refused_in_one_line(settings, line) -> None:
    with pytest.raises(ConfigError, match=line):
        check_combinations(_config(**settings))


def test_a_strategy_that_merges_into_the_base_refuses_k_bit_weights() -> None:
    config = _config(**{"strategy.name": "fedex-lora", "model.quantization": "4bit"})
    with pytest.raises(ConfigError, match="fedex-lora' merges a dense delta into the base"):
        check_strategy(config)
    check_strategy(_config(**{"strategy.name": "ffa-lora", "model.quantization": "4bit"}))


def test_the_device_is_resolved_on_the_machine_that_runs() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") in (expected, "mps")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'train.device' = 'cuda': this machine has no CUDA"):
            resolve_device("cuda")


def test_a_federation_of_4_bit_clients_in_bf16_learns_and_sends_float32_factors(
    tmp_path,
) -> None:
    """QLoRA's form in a whole run: every client and the server's evaluation hold 4-bit NF4
    base weights computing in bf16, and the adapter they exchange and save is float32."""
    run = {
        "model.name": "tiny-llama",
        "model.quantization": "4bit",
        "train.precision": "bf16",
        "train.gradient-checkpointing": True,
        "num-server-rounds": 2,
        "lora.rank": 16,
        "train.lr": 0.02,
        "train.local-steps": 3,
        "strategy.fraction-evaluate": 0.0,
        "eval.max-examples": 8,
    }
    folder = run_federation(tmp_path, "qlora", run, clients=2)
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["clients_accepted"] for r in rounds[1:]] == [2, 2]
    assert rounds[-1]["test_loss"] < rounds[0]["test_loss"]
    saved = load_file(folder / "adapter" / "adapter_model.safetensors")
    assert saved and {t.dtype for t in saved.values()} == {torch.float32}
