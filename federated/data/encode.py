"""From examples to token ids, and from token ids to padded batches.

Causal LM follows transformers' convention: ``labels`` are aligned with ``input_ids`` (the model
shifts them by one inside) and positions set to `IGNORE_INDEX` add nothing to the loss. Only the
response is learned; the prompt is context.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from federated.data.corpus import Example
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION

IGNORE_INDEX = -100

# The prompt format for tokenizers without a chat template.
PLAIN_PROMPT = "Question: {text}\nAnswer: "
# Where a classification prompt template takes the example's text.
PROMPT_FIELD = "{text}"

Encoded = dict[str, Any]  # input_ids and attention_mask (lists of ints), labels or label


def encode_examples(
    examples: Sequence[Example],
    tokenizer: Any,
    task: str,
    max_length: int,
    prompt: str | None = None,
) -> list[Encoded]:
    """Tokenize examples for training or evaluation.

    Parameters
    ----------
    examples
        The examples.
    tokenizer
        A transformers tokenizer.
    task
        `TASK_CAUSAL_LM` or `TASK_CLASSIFICATION`.
    max_length
        The most tokens an encoded example may have, at least 2.
    prompt
        Classification posed as generation: a template with ``{text}``, rendered as the chat's
        user message (the model answers with a label word, see `federated.model.verbalizer`).

    Returns
    -------
    list[dict]
        Causal LM: ``input_ids``, ``attention_mask`` and ``labels`` (`IGNORE_INDEX` on the
        prompt, the token id on the response and its end-of-sequence token). The prompt is
        rendered with the tokenizer's chat template if it has one, else as `PLAIN_PROMPT`.
        Prompt and response are tokenized separately and concatenated, so the boundary is the
        same token boundary the model sees when it generates after the prompt, and the mask is
        exact. Over `max_length`, the response is cut from the right down to one token at least,
        then the prompt from the left (its end, next to the response, matters most).
        Classification: ``input_ids`` and ``attention_mask`` (truncated to `max_length`) and an
        int ``label``; with ``prompt``, the rendered prompt's tokens, cut from the left (its
        end, where the answer follows, matters most).
    """
    if max_length < 2:
        raise ValueError(f"max_length = {max_length}: must be at least 2")
    if task == TASK_CAUSAL_LM:
        eos = _eos_token_id(tokenizer)
        return [_encode_causal(example, tokenizer, eos, max_length) for example in examples]
    if task == TASK_CLASSIFICATION and prompt is not None:
        return [_encode_prompted(example, tokenizer, prompt, max_length) for example in examples]
    if task == TASK_CLASSIFICATION:
        return [_encode_classification(example, tokenizer, max_length) for example in examples]
    raise ValueError(f"task {task!r} is not one of {TASK_CAUSAL_LM}, {TASK_CLASSIFICATION}")


def render_prompt(text: str, tokenizer: Any) -> str:
    """The prompt string the model sees before its response, at training and at generation.

    Parameters
    ----------
    text
        The user's message.
    tokenizer
        A transformers tokenizer, with or without a chat template.

    Returns
    -------
    str
        The chat template's rendering with the generation prompt, or `PLAIN_PROMPT` filled in.
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
    return PLAIN_PROMPT.format(text=text)


def _encode_causal(example: Example, tokenizer: Any, eos: int, max_length: int) -> Encoded:
    # add_special_tokens=False: a chat template already writes its own special tokens, and for
    # the plain format an encoder tokenizer (BERT) would otherwise put [CLS]/[SEP] mid-sequence.
    rendered = render_prompt(example.text, tokenizer)
    prompt = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    target = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [eos]
    if len(prompt) + len(target) > max_length:
        target = target[: max(1, max_length - len(prompt))]
        prompt = prompt[len(prompt) - (max_length - len(target)) :]
    input_ids = prompt + target
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [IGNORE_INDEX] * len(prompt) + target,
    }


def _encode_classification(example: Example, tokenizer: Any, max_length: int) -> Encoded:
    if example.label < 0:
        raise ValueError(f"classification example has no label: {example.text[:60]!r}")
    encoded = tokenizer(example.text, truncation=True, max_length=max_length)
    return {
        "input_ids": list(encoded["input_ids"]),
        "attention_mask": list(encoded["attention_mask"]),
        "label": int(example.label),
    }


def _encode_prompted(example: Example, tokenizer: Any, prompt: str, max_length: int) -> Encoded:
    if example.label < 0:
        raise ValueError(f"classification example has no label: {example.text[:60]!r}")
    rendered = render_prompt(prompt.replace(PROMPT_FIELD, example.text), tokenizer)
    input_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"][-max_length:]
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "label": int(example.label),
    }


def _eos_token_id(tokenizer: Any) -> int:
    """The token that ends a response; encoder tokenizers (BERT) have [SEP] in its place."""
    for token_id in (tokenizer.eos_token_id, getattr(tokenizer, "sep_token_id", None)):
        if token_id is not None:
            return int(token_id)
    raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither an eos nor a sep token")


def collate(batch: Sequence[Encoded], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad encoded examples on the right into one batch.

    Parameters
    ----------
    batch
        Examples from `encode_examples`, all of one task.
    pad_token_id
        The id written into the padding of ``input_ids``.

    Returns
    -------
    dict[str, torch.Tensor]
        ``input_ids`` and ``attention_mask`` (0 on padding), shape (batch, longest); ``labels``:
        for causal LM the same shape, `IGNORE_INDEX` on padding; for classification a
        LongTensor of shape (batch,).
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    longest = max(len(item["input_ids"]) for item in batch)
    input_ids = torch.full((len(batch), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), longest), dtype=torch.long)
    causal = "labels" in batch[0]
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
    for row, item in enumerate(batch):
        length = len(item["input_ids"])
        input_ids[row, :length] = torch.tensor(item["input_ids"], dtype=torch.long)
        attention_mask[row, :length] = torch.tensor(item["attention_mask"], dtype=torch.long)
        if causal:
            labels[row, :length] = torch.tensor(item["labels"], dtype=torch.long)
    if not causal:
        labels = torch.tensor([item["label"] for item in batch], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batches(
    encoded: Sequence[Encoded],
    batch_size: int,
    *,
    generator: torch.Generator | None,
    pad_token_id: int,
    drop_last: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over encoded examples in padded batches.

    Parameters
    ----------
    encoded
        Examples from `encode_examples`.
    batch_size
        Examples per batch.
    generator
        Shuffles the order when given (its state advances, so the next pass differs); None
        keeps the order, for evaluation.
    pad_token_id
        See `collate`.
    drop_last
        Skip a last batch smaller than `batch_size`.

    Yields
    ------
    dict[str, torch.Tensor]
        Batches as `collate` makes them.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size = {batch_size}: must be at least 1")
    if generator is not None:
        order = torch.randperm(len(encoded), generator=generator).tolist()
    else:
        order = list(range(len(encoded)))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        if drop_last and len(chunk) < batch_size:
            return
        yield collate([encoded[i] for i in chunk], pad_token_id)
