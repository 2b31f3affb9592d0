"""The AdamW a split round trains with, on the device (its prompt or its blocks' factors) and on
the server (a device's body factors): the round's rate, the run's weight decay, and the betas the
server's bound on how far a reply moves (``federated.protocol.optimizer_bound``) assumes."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from federated.config import RunConfig
from federated.protocol.optimizer_bound import ADAMW_BETAS


def round_optimizer(
    params: Iterable[torch.Tensor], config: RunConfig, server_round: int
) -> torch.optim.Optimizer:
    train = config.train
    return torch.optim.AdamW(
        list(params),
        lr=train.lr_at(server_round, config.num_server_rounds),
        weight_decay=train.weight_decay,
        betas=ADAMW_BETAS,
    )


def clipped_step(
    optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], max_grad_norm: float
) -> None:
    """One step on the gradients ``params`` hold, clipped to ``max_grad_norm`` (0: unclipped)."""
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(list(params), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
