"""FFA-LoRA: freeze A at a shared random init, train and average only B.

Sun et al., "Improving LoRA in Privacy-preserving Federated Learning", ICLR 2024,
https://arxiv.org/abs/2403.12313.
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


def aggregate_ffa_lora(
    b_matrices: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted mean of the clients' B matrices; A never leaves its shared frozen init.

    Because every client multiplies by the same A, averaging B is exact, not an approximation:
    Σ_k p_k (B_k A) = (Σ_k p_k B_k) A. The price is expressiveness: the update lives in the fixed
    row space of A. Halving what is sent also halves the noise DP-SGD must add, the paper's aim.

    Parameters
    ----------
    b_matrices
        One mapping per client from module (or tensor) name to that client's B [d_out, r].
    weights
        One non-negative weight per client, usually its number of training examples.

    Returns
    -------
    dict[str, torch.Tensor]
        The next global B per name, in the clients' dtype.
    """
    normalised_weights(weights, len(b_matrices))  # refuse negative weights before averaging
    return aggregate_fedavg(b_matrices, weights)


class FfaLora(LoraStrategy):
    """FFA-LoRA (https://arxiv.org/abs/2403.12313): A stays at its shared seeded initialisation,
    so clients never need it on the wire; B is trained, sent and averaged, which is exact."""

    name = "ffa-lora"
    linear = True

    def _without_a(self) -> Tensors:
        a_keys = {p.a_key for p in self.pairs}
        return {k: v for k, v in self.model.trainable.items() if k not in a_keys}

    def train_payload(self) -> Payload:
        return Payload(self._without_a(), {}, RoundPlan(train_a=False, upload_a=False))

    def eval_payload(self) -> Payload:
        return Payload(self._without_a(), {}, RoundPlan())

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        averaged = aggregate_ffa_lora(updates, weights)
        self.model = GlobalModel({**self.model.trainable, **averaged})
