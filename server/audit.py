"""The one-run privacy audit at the end of a run with ``audit.canaries``: the final model's
loss on every canary, the guess that the lowest-loss ones were inserted, the empirical lower
bound on epsilon that the guesses imply (``federated.privacy.audit_bound``), and the
accountant's epsilon beside it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from federated.config import RunConfig
from federated.data.encode import batches
from federated.model.losses import loss_terms
from federated.model.workspace import encode_records, num_labels
from federated.privacy.audit_bound import audit_epsilon
from federated.privacy.canaries import canary, inserted

SIGNIFICANCE = 0.05


def canary_losses(model: torch.nn.Module, tokenizer: Any, config: RunConfig) -> list[float]:
    """Each canary's loss under ``model``, in canary order."""
    labels = num_labels(config) or 0
    examples = [canary(config, i, labels) for i in range(config.audit.canaries)]
    encoded = encode_records(config, tokenizer, examples)
    losses: list[torch.Tensor] = []
    model.eval()
    with torch.inference_mode():
        for batch in batches(
            encoded, config.eval.batch_size, generator=None, pad_token_id=tokenizer.pad_token_id
        ):
            losses.append(loss_terms(model, batch, config.task).per_example())
    return torch.cat(losses).tolist()


def guess_counts(m: int) -> list[int]:
    """The numbers of guesses the attack tries: a tenth, a quarter, half and all of them."""
    return sorted({max(1, m // 10), max(1, m // 4), max(1, m // 2), m})


def accountant_epsilon(rounds: Sequence[dict]) -> dict[str, float]:
    """What the accountants certified over the run: the largest record-level epsilon a client
    reported, and the server's client-level epsilon after the last round."""
    spent = [
        c["epsilon"] for r in rounds for c in r.get("clients", []) if c.get("epsilon") is not None
    ]
    result = {"record_level": max(spent)} if spent else {}
    client_level = [r["client_dp_epsilon"] for r in rounds if "client_dp_epsilon" in r]
    if client_level:
        result["client_level"] = client_level[-1]
    return result


def run_audit(
    model: torch.nn.Module, tokenizer: Any, config: RunConfig, rounds: Sequence[dict]
) -> dict[str, Any]:
    """The audit's record: canaries, guesses, right guesses, the epsilon bound at 95%
    confidence, and the accountants' epsilon."""
    m = config.audit.canaries
    flags = [inserted(config, i) for i in range(m)]
    losses = canary_losses(model, tokenizer, config)
    bound, guesses, right = audit_epsilon(
        flags, [-loss for loss in losses], guess_counts(m), config.dp.delta, SIGNIFICANCE
    )
    inside = [loss for loss, flag in zip(losses, flags, strict=True) if flag]
    outside = [loss for loss, flag in zip(losses, flags, strict=True) if not flag]
    return {
        "canaries": m,
        "inserted": len(inside),
        "guesses": guesses,
        "right_guesses": right,
        "epsilon_lower_bound": bound,
        "confidence": 1 - SIGNIFICANCE,
        "delta": config.dp.delta,
        "mean_loss_inserted": sum(inside) / len(inside) if inside else None,
        "mean_loss_held_out": sum(outside) / len(outside) if outside else None,
        "accountant_epsilon": accountant_epsilon(rounds),
    }
