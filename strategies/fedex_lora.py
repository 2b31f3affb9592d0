"""FedEx-LoRA: average A and B as FedAvg does, and fold the error into the frozen weights.

Singhal et al., "FedEx-LoRA: Exact Aggregation for Federated and Efficient Fine-Tuning of Large
Language Models", ACL 2025, https://arxiv.org/abs/2410.09432.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from federated.protocol.global_model import GlobalModel, Tensors
from strategies.fedavg import aggregate_fedavg
from strategies.lora_factors import Factors, check_same_modules, mean_of_products, weighted_mean
from strategies.lora_strategy import LoraStrategy, add_to_base_delta


def aggregate_fedex_lora(
    clients: Sequence[Factors], weights: Sequence[float]
) -> tuple[Factors, dict[str, torch.Tensor]]:
    """The FedAvg factors (Ā, B̄) plus the residual that makes the global model exact.

    The residual Σ_k p_k B_k A_k − B̄Ā is what FedAvg loses; adding it to the frozen base weight
    gives W0 + residual + B̄Ā = W0 + Σ_k p_k B_k A_k exactly, while the adapter that clients keep
    training stays a rank-r pair. The residual is generally full rank, so it is sent as a dense
    matrix (one per module) alongside the factors.

    Parameters
    ----------
    clients
        One ``Factors`` per client; every client must use the same rank per module.
    weights
        One non-negative weight per client, usually its number of training examples.

    Returns
    -------
    tuple[Factors, dict[str, torch.Tensor]]
        ((Ā, B̄) per module, residual [d_out, d_in] per module), all in the clients' dtype.
    """
    names = check_same_modules(clients, same_rank=True)
    # Subtract in float64: the residual is a small difference of two similar matrices.
    target = mean_of_products(clients, weights, dtype=torch.float64)
    factors: Factors = {}
    residuals: dict[str, torch.Tensor] = {}
    for name in names:
        dtype = clients[0][name][0].dtype
        a_bar = weighted_mean([c[name][0].to(torch.float64) for c in clients], weights)
        b_bar = weighted_mean([c[name][1].to(torch.float64) for c in clients], weights)
        factors[name] = (a_bar.to(dtype), b_bar.to(dtype))
        residuals[name] = (target[name] - b_bar @ a_bar).to(dtype)
    return factors, residuals


class FedExLora(LoraStrategy):
    """FedEx-LoRA (https://arxiv.org/abs/2410.09432): average A and B, and fold the exact residual
    (mean of products minus product of means) into the frozen base weights, which the downlink
    carries, accumulated, as one dense delta per module."""

    name = "fedex-lora"
    merges_into_base = True
    linear = False

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        means, residual = aggregate_fedex_lora([self.factors_of(u) for u in updates], weights)
        head = aggregate_fedavg([self.others_of(u) for u in updates], weights)
        delta = add_to_base_delta(self.model.base_delta, residual, self.scale)
        self.model = GlobalModel(self.with_factors(means, head), delta)
