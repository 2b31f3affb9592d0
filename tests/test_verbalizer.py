"""Classification posed as generation: class scores are the LM's next-token logits at the label
words' tokens, computed directly here; words, prompts and settings that cannot work are refused."""

from __future__ import annotations

import pytest
import torch

from client.dp_lora_trainer import private_gradient, private_model
from federated.config import ConfigError, parse_run_config
from federated.data.corpus import Example
from federated.data.encode import collate, encode_examples, render_prompt
from federated.data.wordnet import load_wordnet
from federated.model.lora import trainable_parameters, wrap_with_lora
from federated.model.presets import load_base_model, load_tokenizer
from federated.model.verbalizer import (
    WORDNET_PROMPT,
    WORDNET_WORDS,
    VerbalizedClassifier,
    label_token_ids,
    label_words,
)
from federated.model.workspace import client_indices, encode_indices, label_tokens, lora_model
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION

TOKENS = (400, 1234, 9876)
VERBALIZED = {
    "model.task": "classification-as-generation",
    "model.name": "tiny-llama",
    "data.name": "wordnet",
    "data.num-classes": 4,
}


def _rows(lengths: list[int]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 49152, (len(lengths), max(lengths)), generator=generator)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        ids[row, length:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_class_logits_are_the_next_token_logits_after_each_rows_last_real_token() -> None:
    lm = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    classifier = VerbalizedClassifier(lm, TOKENS)
    batch = _rows([9, 5, 7])
    with torch.no_grad():
        logits = classifier(**batch).logits
        for row, length in enumerate([9, 5, 7]):
            alone = lm(input_ids=batch["input_ids"][row : row + 1, :length]).logits[0, -1]
            torch.testing.assert_close(logits[row], alone[list(TOKENS)], rtol=1e-5, atol=1e-5)
    assert logits.shape == (3, len(TOKENS))


def test_lora_on_the_verbalized_model_trains_factors_only_and_starts_at_the_base() -> None:
    lm = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    batch = _rows([6, 4])
    with torch.no_grad():
        before = VerbalizedClassifier(lm, TOKENS)(**batch).logits
    model = wrap_with_lora(
        VerbalizedClassifier(lm, TOKENS),
        TASK_CLASSIFICATION,
        rank=4,
        alpha=8.0,
        dropout=0.0,
        target_modules=("q_proj", "v_proj"),
    )
    assert trainable_parameters(model)
    assert all(".lora_" in key for key in trainable_parameters(model))
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, before, rtol=0, atol=0)


def test_label_words_take_the_setting_then_wordnets_table_then_the_labels_last_part() -> None:
    names = ("noun.animal", "verb.emotion", "my_label.big_cat")
    assert label_words(names, "") == ["animal", "emotion", "big cat"]
    assert label_words(names, "noun.animal=beast") == ["beast", "emotion", "big cat"]
    with pytest.raises(ValueError, match="'noun.plant' is not a class of the data set"):
        label_words(names, "noun.plant=tree")
    with pytest.raises(ValueError, match="'noun.animal' is not label=word"):
        label_words(names, "noun.animal")


def test_words_that_begin_with_one_token_are_refused_naming_both_classes() -> None:
    tokenizer = load_tokenizer("tiny-llama")
    names, prompt = ("a", "b", "c"), "Text: {text}"
    ids = label_token_ids(tokenizer, prompt, names, ["animal", "plant", "person"])
    assert len(set(ids)) == 3
    rendered = render_prompt("Text: ", tokenizer)
    start = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    assert ids[1] == tokenizer(rendered + "plant", add_special_tokens=False)["input_ids"][start]
    with pytest.raises(ValueError, match="classes 'a' .* and 'c' .* begin with the same token"):
        label_token_ids(tokenizer, prompt, names, ["possession", "plant", "possessive"])


def test_wordnets_built_in_words_begin_with_different_tokens() -> None:
    names = load_wordnet().label_names
    assert set(names) == set(WORDNET_WORDS)
    ids = label_token_ids(
        load_tokenizer("smollm2-135m"), WORDNET_PROMPT, names, label_words(names, "")
    )
    assert len(set(ids)) == len(names) == 45


def test_a_prompted_example_is_the_rendered_prompt_cut_from_the_left() -> None:
    tokenizer = load_tokenizer("tiny-llama")
    example = Example(text="a large cat of the savanna", label=2)
    (item,) = encode_examples([example], tokenizer, TASK_CLASSIFICATION, 512, prompt="Q: {text}")
    rendered = render_prompt("Q: a large cat of the savanna", tokenizer)
    assert item["input_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert item["label"] == 2
    (cut,) = encode_examples([example], tokenizer, TASK_CLASSIFICATION, 8, prompt="Q: {text}")
    assert cut["input_ids"] == item["input_ids"][-8:]


def test_the_run_config_poses_wordnet_as_generation_for_a_causal_lm() -> None:
    config = parse_run_config(VERBALIZED)
    assert config.task == TASK_CLASSIFICATION and config.verbalized
    assert len(label_tokens(config)) == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"model.prompt": "Define this."}, "must contain {text}"),
        ({"model.verbalizer": "noun.act"}, "'noun.act' is not label=word"),
        ({"model.name": "tiny-bert"}, "needs a causal LM, and 'tiny-bert' is a classification"),
    ],
)
def test_settings_that_cannot_pose_the_task_are_refused(extra: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_run_config({**VERBALIZED, **extra})


def test_a_prompt_without_the_task_and_a_clashing_verbalizer_are_refused() -> None:
    with pytest.raises(ConfigError, match="'model.prompt' = .*only applies to model.task"):
        parse_run_config({"model.prompt": "Q: {text}"})
    config = parse_run_config(
        {**VERBALIZED, "model.verbalizer": "adj.all=possession,noun.plant=possessive"}
    )
    with pytest.raises(ConfigError, match="'model.verbalizer' = .*begin with the same token"):
        label_tokens(config)


def test_dp_sgd_clips_each_example_of_a_verbalized_model_on_its_own() -> None:
    config = parse_run_config({**VERBALIZED, "data.max-per-class": 40})
    local = lora_model(config, fresh=True)
    encoded = encode_indices(config, local.tokenizer, client_indices(config, 0, 2)[0])[:4]
    pad, clip = local.tokenizer.pad_token_id, 1e-4
    model = local.model.train()
    for module in model.modules():  # opacus captures in train mode: make it deterministic
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)

    def gradient(batch: list[dict]) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        with private_model(model, optimizer, "hooks", clip, 0.0, len(batch), generator) as (
            wrapped,
            dp_optimizer,
        ):
            private_gradient(
                wrapped, dp_optimizer, [collate(batch, pad)], TASK_CLASSIFICATION, "hooks"
            )
            return torch.cat([p.grad.flatten() for p in params]).clone()

    alone = [gradient([e]) for e in encoded]
    assert all(float(g.norm()) == pytest.approx(clip, rel=1e-3) for g in alone)
    torch.testing.assert_close(gradient(encoded), torch.stack(alone).mean(0), rtol=1e-3, atol=1e-9)
