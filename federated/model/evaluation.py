"""Held-out evaluation shared by clients (their held-out split) and the server (the test set)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from federated.data.encode import batches
from federated.model.compute import autocast, model_device
from federated.model.losses import loss_terms
from federated.tasks import TASK_CAUSAL_LM


@dataclass(frozen=True)
class EvalResult:
    """Loss per scored token (LM) or example (classifier), and the task's headline metric."""

    loss: float
    num_examples: int
    perplexity: float | None = None
    accuracy: float | None = None

    def metrics(self) -> dict[str, float]:
        out = {"loss": self.loss}
        if self.perplexity is not None:
            out["perplexity"] = self.perplexity
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        return out


def evaluate_model(
    model: torch.nn.Module,
    encoded: Sequence[dict[str, list[int]]],
    task: str,
    *,
    batch_size: int,
    pad_token_id: int,
    precision: str = "fp32",
) -> EvalResult:
    """Evaluate in inference mode over every example, in order, under ``precision``'s autocast
    (a trained head in float32 meets the hidden states of bf16 or fp16 base weights)."""
    if not encoded:
        raise ValueError("cannot evaluate on an empty set")
    was_training = model.training
    model.eval()
    loss_sum, count, correct = 0.0, 0, 0
    with torch.inference_mode(), autocast(model_device(model), precision):
        for batch in batches(encoded, batch_size, generator=None, pad_token_id=pad_token_id):
            terms = loss_terms(model, batch, task)
            loss_sum += float(terms.loss_sum.sum())
            count += int(terms.count.sum())
            correct += int(terms.correct.sum())
    model.train(was_training)
    loss = loss_sum / max(count, 1)
    if task == TASK_CAUSAL_LM:
        return EvalResult(loss, len(encoded), perplexity=math.exp(min(loss, 50.0)))
    return EvalResult(loss, len(encoded), accuracy=correct / max(count, 1))
