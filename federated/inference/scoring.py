"""One model scored on one set of examples: its loss, and the task's measures of what it
answers (Rouge-L and exact match of greedy answers for a causal LM; accuracy, macro-F1 and the
confusion matrix for a classifier)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from federated.config import RunConfig
from federated.data.corpus import Example
from federated.data.encode import batches
from federated.inference.class_metrics import accuracy, confusion_matrix, macro_f1
from federated.inference.generation import Decoding, generate
from federated.inference.text_metrics import exact_match, rouge_l
from federated.model.compute import autocast, model_device
from federated.model.evaluation import evaluate_model
from federated.model.workspace import encode_records
from federated.tasks import TASK_CAUSAL_LM


@dataclass
class Scores:
    """A model's measures on a set of examples, and what it answered."""

    examples: int
    metrics: dict[str, float]
    answers: list[str] = field(default_factory=list)
    confusion: torch.Tensor | None = None


def class_logits(
    model: torch.nn.Module,
    encoded: Sequence[dict[str, Any]],
    *,
    batch_size: int,
    pad_token_id: int,
    precision: str = "fp32",
) -> torch.Tensor:
    """Each encoded example's class logits (examples x classes, float32 on the CPU), in order."""
    found: list[torch.Tensor] = []
    device = model_device(model)
    was_training = model.training
    model.eval()
    with torch.inference_mode(), autocast(device, precision):
        for batch in batches(encoded, batch_size, generator=None, pad_token_id=pad_token_id):
            mask = batch["attention_mask"].to(device)
            out = model(input_ids=batch["input_ids"].to(device), attention_mask=mask)
            found.append(out.logits.float().cpu())
    model.train(was_training)
    return torch.cat(found)


def generation_scores(
    model: torch.nn.Module,
    tokenizer: Any,
    config: RunConfig,
    examples: Sequence[Example],
    decoding: Decoding,
) -> tuple[dict[str, float], list[str]]:
    """The mean Rouge-L and exact match of ``model``'s answers to the examples' prompts against
    their reference answers, and the answers."""
    answers = generate(
        model,
        tokenizer,
        [e.text for e in examples],
        decoding,
        batch_size=config.eval.batch_size,
        precision=config.train.precision,
    )
    pairs = list(zip(answers, (e.target for e in examples), strict=True))
    metrics = {
        "rouge_l": sum(rouge_l(a, r) for a, r in pairs) / len(pairs),
        "exact_match": sum(exact_match(a, r) for a, r in pairs) / len(pairs),
    }
    return metrics, answers


def score(
    model: torch.nn.Module,
    tokenizer: Any,
    config: RunConfig,
    examples: Sequence[Example],
    decoding: Decoding,
    *,
    classes: int = 0,
) -> Scores:
    """``model`` on ``examples``: loss (and perplexity) as the run's evaluation computes it,
    then, for a causal LM, Rouge-L and exact match of its answers against the references; for
    a classifier (``classes`` of them), accuracy, macro-F1 and the confusion matrix."""
    encoded = encode_records(config, tokenizer, examples)
    pad, precision = tokenizer.pad_token_id, config.train.precision
    result = evaluate_model(
        model,
        encoded,
        config.task,
        batch_size=config.eval.batch_size,
        pad_token_id=pad,
        precision=precision,
    )
    metrics = {"loss": result.loss}
    if config.task == TASK_CAUSAL_LM:
        metrics["perplexity"] = result.perplexity
        found, answers = generation_scores(model, tokenizer, config, examples, decoding)
        return Scores(len(examples), {**metrics, **found}, answers)
    logits = class_logits(
        model, encoded, batch_size=config.eval.batch_size, pad_token_id=pad, precision=precision
    )
    predicted = logits.argmax(-1).tolist()
    matrix = confusion_matrix([e.label for e in examples], predicted, classes)
    metrics["accuracy"] = accuracy(matrix)
    metrics["macro_f1"] = macro_f1(matrix)
    return Scores(len(examples), metrics, confusion=matrix)
