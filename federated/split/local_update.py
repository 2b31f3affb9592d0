"""SFPrompt's two ways of saving exchanges on the device: the local-loss update (the head's
output goes straight into the tail, skipping the server's body, so prompts train with no
message) and dataset pruning by EL2N (Paul et al. 2021: keep the examples the local model gets
most wrong, the ones that still have something to teach; the rest never cross the cut)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from federated.data.encode import IGNORE_INDEX, batches
from federated.model.losses import LossTerms, lm_loss_terms
from federated.split.parts import SplitModel


def local_logits(split: SplitModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The device's own model: head, then tail, without the server's blocks."""
    hidden, _ = split.head(batch["input_ids"], batch["attention_mask"])
    return split.tail(hidden)


def local_loss_terms(split: SplitModel, batch: dict[str, torch.Tensor]) -> LossTerms:
    """The local loss L_C of a batch, per example."""
    return lm_loss_terms(local_logits(split, batch), batch["labels"])


def el2n(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The EL2N distance of each token's prediction (a row of ``logits``) from its one-hot
    target: ``|softmax - e_y|``, as ``sqrt(|p|^2 - 2 p_y + 1)``, which spares a one-hot the
    size of the vocabulary."""
    p = logits.float().softmax(-1)
    p_target = p.gather(1, targets.unsqueeze(1)).squeeze(1)
    return ((p * p).sum(-1) - 2 * p_target + 1).clamp(min=0).sqrt()


def el2n_scores(
    split: SplitModel, encoded: Sequence[dict], batch_size: int, pad_token_id: int
) -> torch.Tensor:
    """Each example's EL2N score under the device's local model (head, then tail), in order:
    the mean distance over the tokens it is scored on. The tail runs on those positions only."""
    scores = []
    with torch.no_grad():
        for batch in batches(encoded, batch_size, generator=None, pad_token_id=pad_token_id):
            hidden, _ = split.head(batch["input_ids"], batch["attention_mask"])
            labels = batch["labels"][:, 1:]  # position t predicts token t + 1
            hidden = hidden[:, hidden.size(1) - labels.size(1) - 1 : -1]
            scored = labels != IGNORE_INDEX
            distance = el2n(split.tail(hidden[scored]), labels[scored])
            total = torch.zeros(labels.size(0)).index_add_(0, scored.nonzero()[:, 0], distance)
            scores.append(total / scored.sum(1).clamp(min=1))
    return torch.cat(scores)


def keep_hardest(scores: torch.Tensor, fraction: float) -> list[int]:
    """The indices of the ``fraction`` of examples with the highest scores (at least one),
    ascending; ties go to the earlier example."""
    keep = max(1, math.ceil(fraction * len(scores)))
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:keep])
