"""HetLoRA: clients of different ranks, zero-padded to the largest and averaged by update size.

Cho et al., "Heterogeneous LoRA for Federated Fine-tuning of On-Device Foundation Models",
EMNLP 2024, https://arxiv.org/abs/2401.06432.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from federated.protocol.global_model import GlobalModel, Tensors
from strategies.fedavg import aggregate_fedavg
from strategies.lora_factors import (
    Factors,
    check_same_modules,
    normalised_weights,
    pad_rank,
    rank_of,
    weighted_mean,
)
from strategies.lora_strategy import ServerRankStrategy


def sparsity_weights(
    clients: Sequence[Factors], weights: Sequence[float], name: str
) -> list[float]:
    """Per-client weights for one module: w_k·||B_k A_k||_F, normalised to sum to one.

    If every client's product is zero (B starts at zero in LoRA, so this is round one's normal
    case) the norms say nothing, and the data weights w_k alone are used.
    """
    p = normalised_weights(weights, len(clients))
    norms = [
        float(torch.linalg.matrix_norm(c[name][1].to(torch.float64) @ c[name][0].to(torch.float64)))
        for c in clients
    ]
    scores = [p_k * n_k for p_k, n_k in zip(p, norms, strict=True)]
    total = sum(scores)
    return p if total == 0 else [s / total for s in scores]


def aggregate_hetlora(clients: Sequence[Factors], weights: Sequence[float], rank: int) -> Factors:
    """Zero-pad every client to ``rank`` and take the sparsity-weighted mean of A and of B.

    A client of rank r_k only ever trained the first r_k components, so padding with zeros says
    "no contribution" to the higher ones, and the global pair keeps every client's components.
    Each client then resumes from ``truncate_rank(global_pair, r_k)``.

    The paper weights client k by ||B_k A_k||_F ("sparsity-weighted aggregation"), so that a
    client whose update is nearly zero, and so carries little information, pulls the average less.
    fedtune multiplies that by the client's data weight w_k (its number of examples): the norm
    alone would let a client with a handful of examples but a large, noisy update outweigh one
    with a thousand, and with equal norms the product falls back to plain FedAvg weighting.

    Parameters
    ----------
    clients
        One ``Factors`` per client; ranks may differ across clients but none may exceed ``rank``.
    weights
        One non-negative weight per client, usually its number of training examples.
    rank
        The global rank, usually the largest any client uses.

    Returns
    -------
    Factors
        Per module the padded weighted mean (A [rank, d_in], B [d_out, rank]), in the clients'
        dtype.
    """
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    names = check_same_modules(clients)
    normalised_weights(weights, len(clients))  # refuse bad weights before any arithmetic
    out: Factors = {}
    for name in names:
        for k, client in enumerate(clients):
            if rank_of(client[name]) > rank:
                raise ValueError(
                    f"module '{name}': client {k} has rank {rank_of(client[name])}, "
                    f"above the global rank {rank}"
                )
        padded = [pad_rank(client[name], rank) for client in clients]
        module_weights = sparsity_weights(clients, weights, name)
        out[name] = (
            weighted_mean([a for a, _ in padded], module_weights),
            weighted_mean([b for _, b in padded], module_weights),
        )
    return out


class HetLora(ServerRankStrategy):
    """HetLoRA (https://arxiv.org/abs/2401.06432): clients of different ranks, zero-padded to the
    server's rank and weighted by the norm of their products; each client takes the prefix of
    its own rank."""

    name = "hetlora"
    linear = False

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        padded = aggregate_hetlora([self.factors_of(u) for u in updates], weights, self.rank)
        head = aggregate_fedavg([self.others_of(u) for u in updates], weights)
        self.model = GlobalModel(self.with_factors(padded, head))
