"""FedSA-LoRA: share and average only A; every client keeps its own B.

Guo et al., "Selective Aggregation for Low-Rank Adaptation in Federated Learning", ICLR 2025,
https://arxiv.org/abs/2410.01463.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from federated.protocol.global_model import GlobalModel, Tensors
from federated.protocol.round_plan import RoundPlan
from strategies.fedavg import aggregate_fedavg
from strategies.federated_strategy import Payload
from strategies.lora_factors import normalised_weights
from strategies.lora_strategy import LoraStrategy


def aggregate_fedsa_lora(
    a_matrices: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted mean of the clients' A matrices; the B matrices stay on the clients.

    The paper finds that A learns what is common to all clients and B what is specific to each,
    so only A is worth sharing. Client k's model is B_k · mean(A): personalised by design, so there
    is no single global product to match and no aggregation bias to correct on the server.

    Parameters
    ----------
    a_matrices
        One mapping per client from module (or tensor) name to that client's A [r, d_in].
    weights
        One non-negative weight per client, usually its number of training examples.

    Returns
    -------
    dict[str, torch.Tensor]
        The next shared A per name, in the clients' dtype.
    """
    normalised_weights(weights, len(a_matrices))  # refuse negative weights before averaging
    return aggregate_fedavg(a_matrices, weights)


class FedSaLora(LoraStrategy):
    """FedSA-LoRA (https://arxiv.org/abs/2410.01463): A is shared and averaged, each client keeps
    its own B between rounds.

    Clients still upload B, which never goes back down: its mean only makes the server's global
    model (Ā, B̄), evaluated on the test set beside the clients' personalised held-out results.
    """

    name = "fedsa-lora"
    linear = True

    def train_payload(self) -> Payload:
        b_keys = {p.b_key for p in self.pairs}
        shared = {k: v for k, v in self.model.trainable.items() if k not in b_keys}
        return Payload(shared, {}, RoundPlan(keep_b=True))

    def eval_payload(self) -> Payload:
        return Payload(self.model.trainable, {}, RoundPlan(keep_b=True))

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        b_keys = {p.b_key for p in self.pairs}
        shared = aggregate_fedsa_lora(
            [{k: v for k, v in u.items() if k not in b_keys} for u in updates], weights
        )
        mean_b = aggregate_fedavg([{k: u[k] for k in b_keys} for u in updates], weights)
        self.model = GlobalModel({**shared, **mean_b})
