"""FlexLoRA: average the full products, then hand each client the best low-rank view of it.

Bai et al., "Federated Fine-tuning of Large Language Models under Heterogeneous Tasks and Client
Resources", NeurIPS 2024, https://arxiv.org/abs/2402.11505.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from federated.protocol.global_model import GlobalModel, Tensors
from federated.protocol.round_plan import RoundPlan
from strategies.fedavg import aggregate_fedavg
from strategies.federated_strategy import STATE_PREFIX, Payload
from strategies.lora_factors import Factors, best_rank_approximation, mean_of_products
from strategies.lora_strategy import ServerRankStrategy, add_to_base_delta


def aggregate_flexlora(
    clients: Sequence[Factors], weights: Sequence[float], rank: int
) -> tuple[dict[str, torch.Tensor], Factors]:
    """The mean of the clients' products and its best rank-``rank`` pair per module (via SVD).

    Averaging products, not factors, removes FedAvg's bias and lets clients of any rank take
    part. No rank-``rank`` pair is closer to the mean in Frobenius norm (Eckart–Young), and the
    components are ordered by singular value, so a client of rank q <= ``rank`` takes the prefix
    ``truncate_rank(pair, q)``, itself the best rank-q approximation.

    Parameters
    ----------
    clients
        One ``Factors`` per client; ranks may differ across clients.
    weights
        One non-negative weight per client, usually its number of training examples.
    rank
        The rank of the pairs returned, usually the largest rank any client uses.

    Returns
    -------
    tuple[dict[str, torch.Tensor], Factors]
        (mean product [d_out, d_in] per module, best rank-``rank`` (A, B) per module), both in the
        clients' dtype.
    """
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    target = mean_of_products(clients, weights, dtype=torch.float64)
    means: dict[str, torch.Tensor] = {}
    factors: Factors = {}
    for name, m in target.items():
        dtype = clients[0][name][0].dtype
        # The SVD runs on the float64 mean, so rounding to the clients' dtype happens only once.
        a, b = best_rank_approximation(m, rank)
        means[name], factors[name] = m.to(dtype), (a.to(dtype), b.to(dtype))
    return means, factors


class FlexLora(ServerRankStrategy):
    """FlexLoRA (https://arxiv.org/abs/2402.11505): the global model is the weighted mean of the
    clients' full products; each client restarts from its best approximation at its own rank.

    The truncation is sent once at the server's rank, singular values in decreasing order, so
    the first r components are the best rank-r approximation for every client rank r.
    """

    name = "flexlora"
    merges_into_base = True
    linear = False

    def __init__(self, initial: GlobalModel, **kwargs: Any) -> None:
        super().__init__(initial, **kwargs)
        # What clients start from: the seeded factors until the first aggregation.
        self.client_start = dict(initial.trainable)

    def train_payload(self) -> Payload:
        return Payload(self.client_start, {}, RoundPlan())

    def state_tensors(self) -> Tensors:
        start = {f"{STATE_PREFIX}client-start/{k}": v for k, v in self.client_start.items()}
        return {**super().state_tensors(), **start}

    def restore(self, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
        super().restore(tensors, info)
        prefix = f"{STATE_PREFIX}client-start/"
        start = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        if start.keys() != self.client_start.keys():
            raise ValueError("the checkpoint holds no flexlora client start")
        self.client_start = start

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        mean_product, truncated = aggregate_flexlora(
            [self.factors_of(u) for u in updates], weights, self.rank
        )
        head = aggregate_fedavg([self.others_of(u) for u in updates], weights)
        self.client_start = self.with_factors(truncated, head)
        # The server's model keeps the full-rank mean; the factors are zero-product (B = 0).
        delta = add_to_base_delta({}, mean_product, self.scale)
        self.model = GlobalModel({**self.initial.trainable, **head}, delta)
