"""A model taking on global states: ranks by prefix, base deltas restored, plans on the wire."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord

from federated.config import parse_run_config
from federated.model.adapter_files import BASE_DELTA_FILE, load_global_adapter, save_global_adapter
from federated.model.local_model import fit_rank
from federated.model.presets import load_base_model
from federated.model.workspace import lora_model
from federated.protocol.round_plan import RoundPlan
from tests.model_fixtures import tiny_inputs

CONFIG = parse_run_config({"model.name": "tiny-llama", "lora.rank": 4, "lora.alpha": 8.0})


def _logits(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**tiny_inputs("causal-lm")).logits


def _random_state(local, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: 0.1 * torch.randn(v.shape, generator=g) for k, v in local.initial.items()}


def test_fit_rank_takes_the_prefix_and_refuses_to_grow() -> None:
    a = torch.arange(24.0).reshape(6, 4)
    torch.testing.assert_close(fit_rank(a, torch.Size([2, 4])), a[:2])
    torch.testing.assert_close(fit_rank(a, torch.Size([6, 4])), a)
    with pytest.raises(ValueError, match="cannot fill"):
        fit_rank(a, torch.Size([8, 4]))


def test_clients_of_lower_rank_take_the_prefix_and_keep_the_scale() -> None:
    server, client = lora_model(CONFIG), lora_model(CONFIG, rank=2)
    assert client.rank == 2 and client.model.peft_config["default"].lora_alpha == pytest.approx(4.0)
    state = _random_state(server, 0)
    client.load(state)
    for pair in client.pairs:
        a = dict(client.model.named_parameters())[pair.a_key.replace(".weight", ".default.weight")]
        torch.testing.assert_close(a.detach(), state[pair.a_key][:2])


def test_base_delta_is_added_to_the_originals_and_removed_again() -> None:
    local = lora_model(CONFIG)
    local.load(local.initial)  # the cached model may hold another test's state
    plain = _logits(local.model)
    module = local.pairs[0].module
    delta = {module: torch.full_like(local.original_base[module], 0.05)}
    local.load(local.initial, delta)
    shifted = _logits(local.model)
    local.load(local.initial, delta)  # loading twice must not add the delta twice
    torch.testing.assert_close(_logits(local.model), shifted)
    local.load(local.initial)
    torch.testing.assert_close(_logits(local.model), plain)
    assert not torch.allclose(shifted, plain)


def test_fresh_factors_are_seeded_with_zero_b() -> None:
    local = lora_model(CONFIG)
    one, again, other = local.fresh_factors(1), local.fresh_factors(1), local.fresh_factors(2)
    for pair in local.pairs:
        torch.testing.assert_close(one[pair.a_key], again[pair.a_key])
        assert not torch.equal(one[pair.a_key], other[pair.a_key])
        assert one[pair.b_key].abs().sum() == 0


def test_a_frozen_trains_b_alone_and_restores() -> None:
    local = lora_model(CONFIG)
    a_keys = {p.a_key for p in local.pairs}
    with local.a_frozen(True):
        names = [n for n, p in local.model.named_parameters() if p.requires_grad]
        assert names and not any(".lora_A." in n for n in names)
    assert sum(
        ".lora_A." in n for n, p in local.model.named_parameters() if p.requires_grad
    ) == len(a_keys)


def test_round_plan_travels_in_the_config_record() -> None:
    plan = RoundPlan(train_a=False, keep_b=True, upload_a=False)
    assert RoundPlan.from_config(plan.to_config(ConfigRecord({"server-round": 3}))) == plan
    assert RoundPlan.from_config(ConfigRecord()) == RoundPlan()
    pairs = lora_model(CONFIG).pairs
    assert plan.withheld(pairs) == {p.a_key for p in pairs}


def test_saved_adapter_with_base_delta_reproduces_the_model(tmp_path: Path) -> None:
    local = lora_model(CONFIG)
    module = local.pairs[1].module
    delta = {
        module: 0.05
        * torch.randn(local.original_base[module].shape, generator=torch.Generator().manual_seed(3))
    }
    local.load(_random_state(local, 1), delta)
    expected = _logits(local.model)
    save_global_adapter(local, delta, tmp_path)
    assert (tmp_path / BASE_DELTA_FILE).is_file()
    loaded = load_global_adapter(load_base_model("tiny-llama", "causal-lm", seed=0), tmp_path)
    torch.testing.assert_close(_logits(loaded), expected, rtol=1e-5, atol=1e-5)
    local.load(local.initial)
