"""LoRA wrapping, the trainable state and its keys, strict loading, pairing and saving."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict

from federated.model.lora import (
    LoraPair,
    adapted_names,
    load_trainable_state,
    lora_pairs,
    save_adapter,
    trainable_state,
    wrap_with_lora,
)
from federated.model.presets import load_base_model
from federated.model.verbalizer import VerbalizedClassifier
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from tests.model_fixtures import TINY_NUM_LABELS, perturb_trainable, tiny_inputs, tiny_lora_model

torch.set_num_threads(1)

TASKS = [TASK_CAUSAL_LM, TASK_CLASSIFICATION]


def _logits(model: torch.nn.Module, task: str) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**tiny_inputs(task)).logits


def _base(task: str, seed: int = 0) -> torch.nn.Module:
    if task == TASK_CAUSAL_LM:
        return load_base_model("tiny-llama", task, seed=seed)
    return load_base_model("tiny-bert", task, num_labels=TINY_NUM_LABELS, seed=seed)


def test_causal_trainable_keys_are_exactly_the_lora_factors() -> None:
    model = tiny_lora_model(TASK_CAUSAL_LM, rank=4)
    state = trainable_state(model)
    expected = sorted(
        f"base_model.model.model.layers.{layer}.self_attn.{proj}.lora_{factor}.weight"
        for layer in range(2)
        for proj in ("q_proj", "v_proj")
        for factor in "AB"
    )
    assert list(state) == expected
    assert set(state) == set(get_peft_model_state_dict(model))
    prefix = "base_model.model.model.layers.0.self_attn"
    assert state[f"{prefix}.q_proj.lora_A.weight"].shape == (4, 64)
    assert state[f"{prefix}.q_proj.lora_B.weight"].shape == (64, 4)
    # v_proj has 2 kv heads of 16: 32 outputs.
    assert state[f"{prefix}.v_proj.lora_B.weight"].shape == (32, 4)
    assert all(t.dtype == torch.float32 and t.device.type == "cpu" for t in state.values())
    assert not any(t.requires_grad for t in state.values())


def test_classification_trainable_keys_add_the_head() -> None:
    model = tiny_lora_model(TASK_CLASSIFICATION)
    state = trainable_state(model)
    assert set(state) == set(get_peft_model_state_dict(model))
    pairs, others = lora_pairs(state)
    assert others == ["base_model.model.classifier.bias", "base_model.model.classifier.weight"]
    assert state["base_model.model.classifier.weight"].shape == (TINY_NUM_LABELS, 64)
    assert {p.module.rsplit(".", 1)[1] for p in pairs} == {"query", "value"}
    assert len(pairs) == 4
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(t.numel() for t in state.values())


def test_all_linear_adapts_every_linear_but_not_the_output_layer() -> None:
    model = tiny_lora_model(TASK_CAUSAL_LM, target_modules=("all-linear",))
    pairs, others = lora_pairs(trainable_state(model))
    assert others == []
    names = {p.module.split("layers.")[1] for p in pairs}
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    assert names == {f"{i}.{kind}.{p}" for i in range(2) for kind, p in _kinds(projections)}
    assert not any("lm_head" in p.module or "embed" in p.module for p in pairs)


def test_all_linear_spares_the_output_layer_that_scores_a_verbalized_classifier() -> None:
    classifier = VerbalizedClassifier(_base(TASK_CAUSAL_LM), [5, 6])
    model = wrap_with_lora(
        classifier,
        TASK_CLASSIFICATION,
        rank=2,
        alpha=4.0,
        dropout=0.0,
        target_modules=("all-linear",),
    )
    assert adapted_names(model) == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]


def _kinds(projections: tuple[str, ...]) -> list[tuple[str, str]]:
    return [("self_attn" if p[0] in "qkvo" else "mlp", p) for p in projections]


@pytest.mark.parametrize("task", TASKS)
def test_a_fresh_adapter_leaves_the_base_outputs_unchanged(task: str) -> None:
    expected = _logits(_base(task), task)
    torch.testing.assert_close(_logits(tiny_lora_model(task), task), expected, rtol=0, atol=0)


def test_adapter_init_is_deterministic_per_seed() -> None:
    a = trainable_state(tiny_lora_model(TASK_CAUSAL_LM, lora_seed=5))
    b = trainable_state(tiny_lora_model(TASK_CAUSAL_LM, lora_seed=5))
    c = trainable_state(tiny_lora_model(TASK_CAUSAL_LM, lora_seed=6))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a[key], c[key])
    assert torch.count_nonzero(a[key]) > 0


@pytest.mark.parametrize("task", TASKS)
def test_state_round_trip_into_a_fresh_model_gives_identical_outputs(task: str) -> None:
    source = tiny_lora_model(task, lora_seed=0, dropout=0.1)
    perturb_trainable(source)
    target = tiny_lora_model(task, lora_seed=1, dropout=0.1)
    before = _logits(target, task)
    params_before = {n: p for n, p in target.named_parameters() if p.requires_grad}
    ptrs_before = {n: p.data_ptr() for n, p in params_before.items()}

    load_trainable_state(target, trainable_state(source))

    after = _logits(target, task)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, _logits(source, task), rtol=0, atol=0)
    # In place: the same Parameter objects and storage, so an optimizer stays attached.
    params_after = {n: p for n, p in target.named_parameters() if p.requires_grad}
    assert all(params_after[n] is params_before[n] for n in params_before)
    assert {n: p.data_ptr() for n, p in params_after.items()} == ptrs_before


def test_trainable_state_is_a_copy() -> None:
    model = tiny_lora_model(TASK_CAUSAL_LM)
    state = trainable_state(model)
    key = next(iter(state))
    state[key].add_(1.0)
    assert not torch.equal(trainable_state(model)[key], state[key])


def test_load_casts_to_the_parameter_dtype() -> None:
    model = tiny_lora_model(TASK_CAUSAL_LM)
    state = {k: v.double() + 0.5 for k, v in trainable_state(model).items()}
    load_trainable_state(model, state)
    back = trainable_state(model)
    assert all(torch.equal(back[k], state[k].float()) for k in state)


def _broken_states(state: dict[str, torch.Tensor]) -> list[tuple[dict, str]]:
    keys = sorted(state)
    missing = {k: v for k, v in state.items() if k != keys[0]}
    extra = {**state, "base_model.model.extra.lora_A.weight": torch.zeros(4, 64)}
    wrong_shape = {**state, keys[1]: torch.zeros(state[keys[1]].shape[0] + 1, 1)}
    integer = {**state, keys[2]: state[keys[2]].long()}
    return [
        (missing, f"lacks 1 key\\(s\\), first '{keys[0]}'"),
        (extra, "1 unexpected key\\(s\\), first 'base_model.model.extra.lora_A.weight'"),
        (wrong_shape, f"'{keys[1]}' has shape"),
        (integer, f"'{keys[2]}' is not a floating-point tensor"),
    ]


@pytest.mark.parametrize("case", range(4))
def test_load_is_strict_and_copies_nothing_on_error(case: int) -> None:
    model = tiny_lora_model(TASK_CAUSAL_LM)
    original = trainable_state(model)
    bumped = {k: v + 1.0 for k, v in original.items()}
    broken, message = _broken_states(bumped)[case]
    with pytest.raises(ValueError, match=message):
        load_trainable_state(model, broken)
    now = trainable_state(model)
    assert all(torch.equal(now[k], original[k]) for k in original)


def test_lora_pairs_pairs_each_a_with_its_b() -> None:
    state = trainable_state(tiny_lora_model(TASK_CLASSIFICATION))
    pairs, others = lora_pairs(reversed(list(state)))
    assert pairs == sorted(pairs, key=lambda p: p.module)
    for pair in pairs:
        assert pair.a_key == f"{pair.module}.lora_A.weight"
        assert pair.b_key == f"{pair.module}.lora_B.weight"
        # B @ A is the module's weight update: (out x r) @ (r x in).
        assert (state[pair.b_key] @ state[pair.a_key]).shape == (64, 64)
    paired = {k for p in pairs for k in (p.a_key, p.b_key)}
    assert paired | set(others) == set(state)
    assert paired.isdisjoint(others)


def test_lora_pairs_worked_example() -> None:
    pairs, others = lora_pairs(["m.x.lora_B.weight", "head.bias", "m.x.lora_A.weight"])
    assert pairs == [LoraPair(module="m.x", a_key="m.x.lora_A.weight", b_key="m.x.lora_B.weight")]
    assert others == ["head.bias"]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["m.x.lora_A.weight"], "'m.x' has no lora_B"),
        (["m.x.lora_B.weight"], "'m.x' has no lora_A"),
        (["m.x.lora_A.default.weight", "m.x.lora_B.default.weight"], "is a LoRA tensor but"),
        (["m.x.lora_magnitude_vector"], "is a LoRA tensor but"),
    ],
)
def test_lora_pairs_rejects_what_it_cannot_pair(keys: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lora_pairs(keys)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
@pytest.mark.parametrize("task", TASKS)
def test_saved_adapter_loads_with_peft_and_gives_identical_logits(
    task: str, tmp_path: Path
) -> None:
    model = tiny_lora_model(task)
    perturb_trainable(model)
    save_adapter(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    loaded = PeftModel.from_pretrained(_base(task), tmp_path / "adapter")
    torch.testing.assert_close(_logits(loaded, task), _logits(model, task), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("task", "targets", "embedding"),
    [
        (TASK_CAUSAL_LM, ("q_proj", "embed_tokens"), "model.embed_tokens"),
        (TASK_CLASSIFICATION, ("word_embeddings",), "bert.embeddings.word_embeddings"),
    ],
)
def test_embedding_targets_are_refused_before_touching_the_model(
    task: str, targets: tuple[str, ...], embedding: str
) -> None:
    base = _base(task)
    modules_before = [type(m) for m in base.modules()]
    with pytest.raises(ValueError, match=f"lora target '{embedding}' is an embedding layer"):
        wrap_with_lora(base, task, rank=4, alpha=8, dropout=0.0, target_modules=targets)
    assert [type(m) for m in base.modules()] == modules_before


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rank": 0}, "rank must be an integer >= 1"),
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"target_modules": ()}, "non-empty tuple"),
        ({"target_modules": "q_proj"}, "non-empty tuple"),
        ({"target_modules": ("all-linear", "q_proj")}, "must be the only lora target"),
        ({"target_modules": ("no_such_module",)}, "no_such_module"),
    ],
)
def test_bad_settings_are_refused(settings: dict, message: str) -> None:
    kwargs = {"rank": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ("q_proj",)} | settings
    with pytest.raises(ValueError, match=message):
        wrap_with_lora(_base(TASK_CAUSAL_LM), TASK_CAUSAL_LM, **kwargs)
