"""Naive federated averaging of every trainable tensor, LoRA factors included.

The baseline the other strategies correct: averaging A and B separately gives mean(B)·mean(A),
which is not the mean of the clients' products B·A.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from strategies.lora_strategy import LoraStrategy


def weighted_mean(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Sum of w_i·t_i over i with the weights normalised to one, in float64 for stable sums."""
    if len(tensors) != len(weights) or not tensors:
        raise ValueError(
            f"need one weight per tensor, got {len(tensors)} tensors, {len(weights)} weights"
        )
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(f"weights must add up to a positive number, got {total}")
    acc = torch.zeros_like(tensors[0], dtype=torch.float64)
    for tensor, weight in zip(tensors, weights, strict=True):
        acc += tensor.to(torch.float64) * (weight / total)
    return acc.to(tensors[0].dtype)


def aggregate_fedavg(
    updates: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted mean of each named tensor across clients (McMahan et al., 2017).

    Parameters
    ----------
    updates
        One mapping per client from tensor name to tensor; all with the same names and shapes.
    weights
        One non-negative weight per client, usually its number of training examples.
    """
    keys = set(updates[0])
    for update in updates[1:]:
        if set(update) != keys:
            raise ValueError(f"clients disagree on tensor names: {sorted(keys ^ set(update))}")
    return {key: weighted_mean([u[key] for u in updates], weights) for key in sorted(keys)}


class FedAvgLora(LoraStrategy):
    """FedAvg over LoRA tensors (https://arxiv.org/abs/1602.05629), the naive baseline."""

    name = "fedavg"

    def aggregate(
        self, updates: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
    ) -> dict[str, torch.Tensor]:
        return aggregate_fedavg(updates, weights)
