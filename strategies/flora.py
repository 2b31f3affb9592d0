"""FLoRA: stack the clients' factors instead of averaging them, so the product is exact.

Wang et al., "FLoRA: Federated Fine-Tuning Large Language Models with Heterogeneous Low-Rank
Adaptations", NeurIPS 2024, https://arxiv.org/abs/2409.05976.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from federated.protocol.global_model import GlobalModel, Tensors
from federated.protocol.round_plan import RoundPlan
from strategies.fedavg import aggregate_fedavg
from strategies.federated_strategy import Payload
from strategies.lora_factors import Factors, check_same_modules, normalised_weights
from strategies.lora_strategy import LoraStrategy, add_to_base_delta


def aggregate_flora(clients: Sequence[Factors], weights: Sequence[float]) -> Factors:
    """Concatenate the clients' factors along the rank dimension, B scaled by p_k.

    Block multiplication gives [p_1 B_1 … p_K B_K] · [A_1; …; A_K] = Σ_k p_k B_k A_k, the mean of
    the products with no error, whatever each client's rank. The result has rank Σ_k r_k, which
    is why the paper merges it into the frozen weights and re-initialises the clients' LoRA each
    round rather than sending the stack back as an adapter.

    Parameters
    ----------
    clients
        One ``Factors`` (module -> (A [r_k, d_in], B [d_out, r_k])) per client; ranks may differ.
    weights
        One non-negative weight per client, usually its number of training examples.

    Returns
    -------
    Factors
        Per module the stacked pair (A [Σr_k, d_in], B [d_out, Σr_k]), in the clients' dtype.
    """
    names = check_same_modules(clients)
    p = normalised_weights(weights, len(clients))
    out: Factors = {}
    for name in names:
        dtype = clients[0][name][0].dtype
        a_stack = torch.cat([client[name][0] for client in clients], dim=0)
        # The weight goes on B only: scaling both factors would weight the product by p_k².
        b_stack = torch.cat(
            [
                p_k * client[name][1].to(torch.float64)
                for p_k, client in zip(p, clients, strict=True)
            ],
            dim=1,
        )
        out[name] = (a_stack, b_stack.to(dtype))
    return out


class FLoRA(LoraStrategy):
    """FLoRA (https://arxiv.org/abs/2409.05976): the stacked factors' product, exactly the weighted
    mean of the clients' products, is merged into the base weights; clients start every round
    from fresh factors. Any mix of ranks stacks.

    The downlink carries the accumulated merge as one dense delta per module, so a client needs
    no memory of earlier rounds (and a simulated client sharing a process needs none either).
    """

    name = "flora"
    merges_into_base = True
    linear = False
    mixed_ranks = True

    def train_payload(self) -> Payload:
        head = self.others_of(self.model.trainable)
        return Payload(head, self.model.base_delta, RoundPlan(fresh_factors=True))

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        stacked = aggregate_flora([self.factors_of(u) for u in updates], weights)
        merged = {m: b.to(torch.float64) @ a.to(torch.float64) for m, (a, b) in stacked.items()}
        head = aggregate_fedavg([self.others_of(u) for u in updates], weights)
        delta = add_to_base_delta(self.model.base_delta, merged, self.scale)
        self.model = GlobalModel({**self.initial.trainable, **head}, delta)
