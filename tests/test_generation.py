"""Generated answers against the definition of greedy decoding, batched as alone, and sampling
repeatable by its seed."""

from __future__ import annotations

import pytest
import torch

from federated.data.encode import render_prompt
from federated.inference.generation import Decoding, chat_prompt, generate
from federated.model.presets import load_tokenizer
from federated.tasks import TASK_CAUSAL_LM
from tests.model_fixtures import perturb_trainable, tiny_lora_model

PROMPTS = ["What is AI?", "Tell me a joke about computers, please.", "Hi"]


@pytest.fixture(scope="module")
def lm():
    model = tiny_lora_model(TASK_CAUSAL_LM, base_seed=1)
    perturb_trainable(model, seed=1)  # answers that differ from prompt to prompt
    return model.eval(), load_tokenizer("tiny-llama")


def _greedy_by_hand(model, tokenizer, prompt: str, steps: int) -> str:
    """Append the most likely next token, one forward pass of the whole sequence at a time."""
    ids = tokenizer(render_prompt(prompt, tokenizer), add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1]
            token = int(logits.argmax())
            if token == tokenizer.eos_token_id:
                break
            new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def test_greedy_answers_are_the_most_likely_token_at_each_step(lm) -> None:
    model, tokenizer = lm
    answers = generate(model, tokenizer, PROMPTS, Decoding(max_new_tokens=6))
    assert answers == [_greedy_by_hand(model, tokenizer, p, 6) for p in PROMPTS]
    assert len({a for a in answers if a}) >= 2  # words, and not the same for every prompt


def test_a_batch_padded_on_the_left_answers_as_each_prompt_alone(lm) -> None:
    model, tokenizer = lm
    batched = generate(model, tokenizer, PROMPTS, Decoding(max_new_tokens=5), batch_size=3)
    alone = [generate(model, tokenizer, [p], Decoding(max_new_tokens=5))[0] for p in PROMPTS]
    assert batched == alone


def test_sampling_repeats_under_its_seed_and_moves_with_another(lm) -> None:
    model, tokenizer = lm
    warm = Decoding(max_new_tokens=8, temperature=1.5, seed=7)
    first = generate(model, tokenizer, PROMPTS, warm)
    assert generate(model, tokenizer, PROMPTS, warm) == first
    other = Decoding(max_new_tokens=8, temperature=1.5, seed=8)
    assert generate(model, tokenizer, PROMPTS, other) != first


def test_a_chat_prompt_holds_the_earlier_turns_in_the_template(lm) -> None:
    _, tokenizer = lm
    text = chat_prompt([("Hi", "Hello!")], "How are you?", tokenizer)
    assert text.index("Hi") < text.index("Hello!") < text.index("How are you?")
    assert text.endswith(render_prompt("How are you?", tokenizer).split("How are you?")[-1])


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [({"max_new_tokens": 0}, "at least 1"), ({"temperature": -1.0}, "temperature")],
)
def test_a_decoding_out_of_range_is_refused(kwargs, says) -> None:
    with pytest.raises(ValueError, match=says):
        Decoding(**kwargs)
