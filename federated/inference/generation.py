"""Answers from a causal LM, prompted as the run trained it.

A prompt is rendered as at training (`federated.data.encode.render_prompt`: the chat template's
user turn, else the plain question format), so the fine-tuned model meets the boundary it learned
to answer after. Decoding is greedy unless a temperature is given; a seed makes sampling
repeatable. Batches are padded on the left, so that every row's next token follows its prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from federated.data.encode import render_prompt
from federated.model.compute import autocast, model_device


@dataclass(frozen=True)
class Decoding:
    """How answers are drawn: greedy (temperature 0) or sampled, at most ``max_new_tokens``."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens = {self.max_new_tokens}: must be at least 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")

    def generate_kwargs(self) -> dict[str, Any]:
        if self.temperature == 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}


def chat_prompt(turns: Sequence[tuple[str, str]], message: str, tokenizer: Any) -> str:
    """The prompt for ``message`` after the (user, assistant) ``turns`` of a conversation: the
    chat template's rendering of all of them, else the plain format's, turn after turn."""
    if getattr(tokenizer, "chat_template", None):
        messages = [
            m
            for user, answer in turns
            for m in ({"role": "user", "content": user}, {"role": "assistant", "content": answer})
        ]
        messages.append({"role": "user", "content": message})
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    history = "".join(render_prompt(user, tokenizer) + answer + "\n" for user, answer in turns)
    return history + render_prompt(message, tokenizer)


def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    decoding: Decoding = Decoding(),
    *,
    rendered: bool = False,
    batch_size: int = 8,
    precision: str = "fp32",
) -> list[str]:
    """One answer per prompt (the new text only, special tokens dropped). ``rendered``: the
    prompts are already rendered (`chat_prompt`), else each is a user message."""
    texts = list(prompts) if rendered else [render_prompt(p, tokenizer) for p in prompts]
    device = model_device(model)
    eos = tokenizer.eos_token_id
    answers: list[str] = []
    was_training = model.training
    model.eval()
    torch.manual_seed(decoding.seed)  # the sampler draws from torch's default generator
    for start in range(0, len(texts), batch_size):
        chunk = [
            tokenizer(t, add_special_tokens=False)["input_ids"]
            for t in texts[start : start + batch_size]
        ]
        width = max(map(len, chunk))
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(c)) + c for c in chunk])
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk])
        with torch.inference_mode(), autocast(device, precision):
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=decoding.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
                **decoding.generate_kwargs(),
            )
        answers += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    model.train(was_training)
    return [a.strip() for a in answers]
