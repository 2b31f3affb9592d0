"""The base of the LoRA strategies: factors in, factors out.

Every LoRA strategy sends its clients adapter tensors and takes back what they trained; it
differs from the others in what it sends (``train_payload``) and how replies combine
(``aggregate``, which calls the strategy's pure function on tensors). What it shares with the
seed-based strategy is ``federated_strategy``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from federated.config import RunConfig
from federated.protocol import message_keys as keys
from federated.protocol.global_model import GlobalModel, Tensors
from federated.protocol.wire import tensors_to_record
from strategies.federated_strategy import FederatedStrategy
from strategies.lora_factors import Factors
from strategies.partition_sampling import PartitionSampler


def add_to_base_delta(
    delta: Mapping[str, torch.Tensor], additions: Mapping[str, torch.Tensor], scale: float
) -> Tensors:
    """``delta + scale * addition`` per module: what the LoRA factors cannot hold goes into the
    frozen base weights, with the LoRA scale so it means what the factors' product meant."""
    out = dict(delta)
    for module, addition in additions.items():
        step = scale * addition.to(torch.float64)
        out[module] = (step if module not in out else out[module].to(torch.float64) + step).float()
    return out


class LoraStrategy(FederatedStrategy):
    """A strategy over LoRA factors (and a head): every client gets one content, and an upload
    moves the model by its difference from it.

    Parameters
    ----------
    initial
        The global model before the first round (seeded factors, zero B, the initial head).
    scale
        The LoRA scale alpha / r shared by every client; products merged into base weights carry it.
    sampler
        Draws each round's nodes by partition.
    **fedavg_kwargs
        Flower ``FedAvg`` sampling settings (fraction_train, min_train_nodes, ...).
    """

    def __init__(
        self,
        initial: GlobalModel,
        *,
        scale: float,
        sampler: PartitionSampler,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(initial, sampler=sampler, **fedavg_kwargs)
        self.scale = scale
        self.initial = GlobalModel(dict(initial.trainable), dict(initial.base_delta))

    @classmethod
    def from_config(
        cls, config: RunConfig, initial: GlobalModel, options: Any, **fedavg_kwargs: Any
    ) -> LoraStrategy:
        return cls(initial, scale=config.lora.scale, **fedavg_kwargs)

    def messages_to(
        self, kind: str, server_round: int, nodes: Sequence[int], shared: ConfigRecord
    ) -> list[Message]:
        """One content for all of ``nodes``: the payload, the plan and ``shared``."""
        payload = self.train_payload() if kind == "train" else self.eval_payload()
        config = payload.plan.to_config(ConfigRecord())
        config.update(shared)
        config[keys.SERVER_ROUND] = server_round
        arrays = tensors_to_record(payload.trainable, self.wire_dtype)
        content = RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config})
        if payload.base_delta:
            content[keys.BASE_DELTA] = tensors_to_record(payload.base_delta, self.wire_dtype)
        message_type = MessageType.TRAIN if kind == "train" else MessageType.EVALUATE
        return list(self._construct_messages(content, list(nodes), message_type))

    def client_delta(self, update: Mapping[str, torch.Tensor]) -> Tensors:
        return {k: v - self.model.trainable[k] for k, v in update.items()}

    def apply_mean_delta(self, delta: Mapping[str, torch.Tensor]) -> None:
        trainable = {k: v + delta[k] if k in delta else v for k, v in self.model.trainable.items()}
        self.model = GlobalModel(trainable, self.model.base_delta)

    def factors_of(self, update: Mapping[str, torch.Tensor]) -> Factors:
        """The (A, B) pair of every adapted module in one client's upload."""
        return {p.module: (update[p.a_key], update[p.b_key]) for p in self.pairs}

    def with_factors(self, factors: Factors, others: Mapping[str, torch.Tensor]) -> Tensors:
        """Trainable tensors from per-module factors plus the non-factor tensors (a head)."""
        out = dict(others)
        for p in self.pairs:
            out[p.a_key], out[p.b_key] = factors[p.module]
        return out

    def others_of(self, update: Mapping[str, torch.Tensor]) -> Tensors:
        factor_keys = {k for p in self.pairs for k in (p.a_key, p.b_key)}
        return {k: v for k, v in update.items() if k not in factor_keys}


class ServerRankStrategy(LoraStrategy):
    """A strategy that serves clients of any rank up to the server's rank (``lora.rank``)."""

    mixed_ranks = True

    def __init__(
        self, initial: GlobalModel, *, scale: float, rank: int, **fedavg_kwargs: Any
    ) -> None:
        super().__init__(initial, scale=scale, **fedavg_kwargs)
        self.rank = rank

    @classmethod
    def from_config(
        cls, config: RunConfig, initial: GlobalModel, options: Any, **fedavg_kwargs: Any
    ) -> ServerRankStrategy:
        return cls(initial, scale=config.lora.scale, rank=config.lora.rank, **fedavg_kwargs)
