"""Naive federated averaging of every trainable tensor, LoRA factors included.

The baseline the other strategies correct: averaging A and B separately gives mean(B)·mean(A),
which is not the mean of the clients' products B·A.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from federated.protocol.global_model import GlobalModel, Tensors
from strategies.lora_factors import weighted_mean
from strategies.lora_strategy import LoraStrategy


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
    linear = True

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        self.model = GlobalModel(aggregate_fedavg(updates, weights), self.model.base_delta)
