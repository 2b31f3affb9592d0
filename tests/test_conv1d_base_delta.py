"""A dense base delta means on a GPT-2 ``Conv1D`` layer what it means on a linear one: the model
with factors (A, B) equals the model with B = 0 and scale·B·A added to the base weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from federated.config import parse_run_config
from federated.model.workspace import lora_model
from tests.gpt2_fixture import save_tiny_gpt2


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


def test_a_base_delta_on_conv1d_layers_equals_the_factors_it_replaces(gpt2_folder: Path) -> None:
    config = parse_run_config(
        {"model.name": str(gpt2_folder), "lora.rank": 2, "lora.target-modules": "all-linear"}
    )
    local = lora_model(config, fresh=True)
    local.model.eval()  # no dropout
    modules = {p.module.rsplit(".", 1)[-1] for p in local.pairs}
    assert {"c_attn", "c_fc", "c_proj"} <= modules  # non-square and square Conv1D layers
    generator = torch.Generator().manual_seed(0)
    factors = {k: 0.3 * torch.randn(v.shape, generator=generator) for k, v in local.initial.items()}
    inputs = {"input_ids": torch.randint(10, 1000, (2, 9), generator=generator)}

    local.load(factors)
    with torch.no_grad():
        expected = local.model(**inputs).logits
    delta = {p.module: config.lora.scale * factors[p.b_key] @ factors[p.a_key] for p in local.pairs}
    zero_b = {**factors, **{p.b_key: torch.zeros_like(factors[p.b_key]) for p in local.pairs}}
    local.load(zero_b)
    with torch.no_grad():
        without = local.model(**inputs).logits
    local.load(zero_b, delta)
    with torch.no_grad():
        got = local.model(**inputs).logits
    # Judged against the factors' own effect on the logits: float32 sums in another order differ
    # by ~1e-5 across CPUs, a transposed or missing delta by the size of the effect itself.
    effect = (expected - without).abs().max()
    assert effect > 0.01
    assert (got - expected).abs().max() < 1e-3 * effect
