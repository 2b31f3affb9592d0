"""Losses computed per example outside the model.

transformers averages over every token of a batch; per-example terms are what record-level DP
clips, and token sums are what perplexity needs, so the model only ever returns logits here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from federated.data.encode import IGNORE_INDEX
from federated.model.compute import model_device
from federated.tasks import TASK_CAUSAL_LM


@dataclass(frozen=True)
class LossTerms:
    """Per-example pieces of a batch's loss.

    ``loss_sum[i]`` is the summed loss of example i over its ``count[i]`` scored tokens (1 for a
    classifier); ``correct[i]`` counts its right predictions (tokens or the label).
    """

    loss_sum: torch.Tensor
    count: torch.Tensor
    correct: torch.Tensor

    def per_example(self) -> torch.Tensor:
        """Each example's loss, its mean over its scored tokens: one record, one term."""
        return self.loss_sum / self.count.clamp(min=1)

    def mean_loss(self) -> torch.Tensor:
        """Loss averaged over every scored token (or example) of the batch."""
        return self.loss_sum.sum() / self.count.sum().clamp(min=1)


def loss_terms(model: torch.nn.Module, batch: dict[str, torch.Tensor], task: str) -> LossTerms:
    """Run the model on a collated batch (moved to the model's device) and split its loss per
    example."""
    device = model_device(model)
    mask = batch["attention_mask"]
    logits = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=None if mask is None else mask.to(device),
    ).logits
    labels = batch["labels"].to(device)
    if task == TASK_CAUSAL_LM:
        return lm_loss_terms(logits, labels)
    example_loss = F.cross_entropy(logits.float(), labels, reduction="none")
    ones = torch.ones_like(labels)
    return LossTerms(example_loss, ones, (logits.argmax(-1) == labels).long())


def lm_loss_terms(logits: torch.Tensor, labels: torch.Tensor) -> LossTerms:
    """A causal LM's terms from its logits; a prompt-tuned model's (peft, or the split model's
    tail) start with its virtual tokens' positions, which predict nothing."""
    logits = logits[:, logits.size(1) - labels.size(1) :, :]
    # Position t predicts token t+1.
    logits, labels = logits[:, :-1, :], labels[:, 1:]
    token_loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(labels.shape)
    scored = labels != IGNORE_INDEX
    right = (logits.argmax(-1) == labels) & scored
    return LossTerms(token_loss.sum(1), scored.sum(1), right.sum(1))
