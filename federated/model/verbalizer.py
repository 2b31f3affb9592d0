"""Classification posed as generation: a causal LM scores each class by its label word.

The prompt asks the question, the answer's first token is the label word's, and the class
logits are the LM's next-token logits at the prompt's last token, taken at each class's first
label-word token (as LM-BFF and MeZO pose tasks). The pretrained model already does the task a
little, which is where zeroth-order fine-tuning works; every loss, metric and reply is then the
classifier's. Scoring one token keeps a step at one forward pass for any number of classes, so
the label words must begin with different tokens (checked at start).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from federated.data.encode import PROMPT_FIELD, render_prompt

DEFAULT_PROMPT = "Classify this text with one word.\nText: {text}"
WORDNET_PROMPT = (
    "Which kind of word has this dictionary definition? Answer with one word.\nDefinition: {text}"
)

# WordNet's lexicographer files, as words a model can say: the file's own word where it is one
# that begins differently from the others, else a near synonym (verb.emotion against
# noun.feeling, the adjective and adverb files by what their words name).
WORDNET_WORDS = {
    "adj.all": "quality",
    "adj.pert": "pertaining",
    "adj.ppl": "participle",
    "adv.all": "manner",
    "noun.Tops": "entity",
    "noun.act": "act",
    "noun.animal": "animal",
    "noun.artifact": "artifact",
    "noun.attribute": "attribute",
    "noun.body": "body",
    "noun.cognition": "knowledge",
    "noun.communication": "communication",
    "noun.event": "event",
    "noun.feeling": "feeling",
    "noun.food": "food",
    "noun.group": "group",
    "noun.location": "place",
    "noun.motive": "motive",
    "noun.object": "object",
    "noun.person": "person",
    "noun.phenomenon": "phenomenon",
    "noun.plant": "plant",
    "noun.possession": "property",
    "noun.process": "process",
    "noun.quantity": "quantity",
    "noun.relation": "relation",
    "noun.shape": "shape",
    "noun.state": "state",
    "noun.substance": "substance",
    "noun.time": "time",
    "verb.body": "dressing",
    "verb.change": "change",
    "verb.cognition": "thinking",
    "verb.communication": "telling",
    "verb.competition": "fighting",
    "verb.consumption": "eating",
    "verb.contact": "contact",
    "verb.creation": "making",
    "verb.emotion": "emotion",
    "verb.motion": "moving",
    "verb.perception": "seeing",
    "verb.possession": "owning",
    "verb.social": "social",
    "verb.stative": "being",
    "verb.weather": "weather",
}


def class_prompt_template(prompt: str, data_name: str) -> str:
    """The run's prompt (model.prompt), else the built-in one for its data set."""
    return prompt or (WORDNET_PROMPT if data_name == "wordnet" else DEFAULT_PROMPT)


def verbalizer_pairs(spec: str) -> dict[str, str]:
    """``label=word`` pairs, comma-separated, as a mapping."""
    given: dict[str, str] = {}
    for pair in (p.strip() for p in spec.split(",") if p.strip()):
        label, sep, word = pair.partition("=")
        if not sep or not label.strip() or not word.strip():
            raise ValueError(f"{pair!r} is not label=word")
        given[label.strip()] = word.strip()
    return given


def label_words(label_names: Sequence[str], spec: str) -> list[str]:
    """One word per class, in class order: ``spec``'s (see `verbalizer_pairs`), else WordNet's
    table, else the label's last dotted part with ``_`` as a space."""
    given = verbalizer_pairs(spec)
    for label in given:
        if label not in label_names:
            shown = ", ".join(label_names[:8]) + (", ..." if len(label_names) > 8 else "")
            raise ValueError(f"{label!r} is not a class of the data set ({shown})")
    return [
        given.get(name) or WORDNET_WORDS.get(name) or name.rsplit(".", 1)[-1].replace("_", " ")
        for name in label_names
    ]


def label_token_ids(
    tokenizer: Any, prompt: str, names: Sequence[str], words: Sequence[str]
) -> list[int]:
    """Each word's first token where it follows the rendered prompt; distinct, or which two
    classes share one is the error."""
    rendered = render_prompt(prompt.replace(PROMPT_FIELD, ""), tokenizer)
    before = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    ids = []
    for word in words:
        after = tokenizer(rendered + word, add_special_tokens=False)["input_ids"]
        if after[: len(before)] != before or len(after) == len(before):
            after = before + tokenizer(word, add_special_tokens=False)["input_ids"]
        ids.append(after[len(before)])
    first: dict[int, int] = {}
    for index, token in enumerate(ids):
        if token in first:
            other = first[token]
            raise ValueError(
                f"classes {names[other]!r} ({words[other]!r}) and {names[index]!r} "
                f"({words[index]!r}) begin with the same token "
                f"{tokenizer.decode([token])!r}; give one of them a word that begins otherwise"
            )
        first[token] = index
    return ids


class VerbalizedClassifier(nn.Module):
    """A causal LM whose class logits are its next-token logits at the label words' tokens."""

    def __init__(self, lm: PreTrainedModel, label_tokens: Sequence[int]) -> None:
        super().__init__()
        self.lm = lm
        self.config = lm.config  # peft reads the base model's config
        self.register_buffer("label_tokens", torch.tensor(list(label_tokens)), persistent=False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> SequenceClassifierOutput:
        hidden = self.lm.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        # Batches are padded on the right: each row's answer follows its last real token.
        if attention_mask is None:
            final = hidden[:, -1]
        else:
            last = attention_mask.sum(1) - 1
            final = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        logits = self.lm.get_output_embeddings()(final)
        return SequenceClassifierOutput(logits=logits[:, self.label_tokens.to(logits.device)])

    def get_output_embeddings(self) -> nn.Module:
        """The LM's output layer: what all-linear leaves alone."""
        return self.lm.get_output_embeddings()
