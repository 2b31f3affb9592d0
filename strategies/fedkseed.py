"""FedKSeed (https://arxiv.org/abs/2312.06353): zeroth-order steps travel as (seed, scalar).

The server keeps one running sum of scalars per seed of the pool; the model is the base weights
minus lr times the seed sums' perturbations, which every party rebuilds on its own. A round's
update is the weighted mean over clients of their steps, a linear function of their replies.
FedKSeed-Pro samples seeds by the size of their past scalars instead of uniformly.
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
from federated.zo.sensitive import Mask, mask_arrays
from federated.zo.sums_sync import SumsLedger
from federated.zo.workspace import sensitive_mask
from strategies.federated_strategy import STATE_PREFIX, FederatedStrategy
from strategies.lora_factors import normalised_weights, weighted_mean


def aggregate_seed_scalars(
    steps: Sequence[tuple[torch.Tensor, torch.Tensor]], weights: Sequence[float], pool_size: int
) -> torch.Tensor:
    """Σ_k p_k Σ_t g_{k,t}·e_{j_{k,t}}: how much each seed's sum moves this round.

    Parameters
    ----------
    steps
        Per client, (seed indices [T_k], scalars [T_k]) of its local steps, in order.
    weights
        One non-negative weight per client, usually its number of training examples.
    pool_size
        K, the number of seeds.
    """
    p = normalised_weights(weights, len(steps))
    delta = torch.zeros(pool_size, dtype=torch.float64)
    for (indices, scalars), p_k in zip(steps, p, strict=True):
        delta.index_add_(0, indices.long(), scalars.to(torch.float64) * p_k)
    return delta.to(torch.float32)


def seed_probabilities(amplitude_sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """FedKSeed-Pro's sampling distribution over seeds.

    A seed's importance is the mean size of its clipped scalars so far, its history starting at
    one zero (so an unused seed counts as 0); importances are scaled to [0, 1] and softmaxed.
    """
    importance = amplitude_sums.double() / (counts.double() + 1.0)
    spread = importance.max() - importance.min()
    return ((importance - importance.min()) / (spread + 1e-10)).softmax(0).to(torch.float32)


class FedKSeed(FederatedStrategy):
    """FedKSeed's server: seed sums, per-node downlinks, optional Pro sampling."""

    name = "fedkseed"
    linear = True
    reply_kind = "seed-steps"

    def __init__(
        self,
        initial: GlobalModel,
        *,
        pro: bool,
        pro_clip: float,
        changes_only: bool,
        mask: Mask | None = None,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(initial, **fedavg_kwargs)
        self.ledger = SumsLedger(initial.trainable[keys.SEED_SUMS].clone())
        self.pool_size = len(self.ledger.sums)
        self.pro, self.pro_clip, self.changes_only = pro, pro_clip, changes_only
        self.amplitude_sums = torch.zeros(self.pool_size, dtype=torch.float64)
        self.counts = torch.zeros(self.pool_size, dtype=torch.float64)
        self.sent_version: dict[str, int] = {}
        # zo.params = sensitive: the mask, sent to each node that holds no sums of this run yet
        # (a new, restarted or forgotten node), which is when it may lack the mask too.
        self.mask = mask
        self.sampled: dict[str, list[int]] = {"train": [], "evaluate": []}

    @classmethod
    def from_config(
        cls, config: RunConfig, initial: GlobalModel, options: Any, **fedavg_kwargs: Any
    ) -> FedKSeed:
        z = config.zo
        return cls(
            initial,
            pro=z.pro,
            pro_clip=z.pro_clip,
            changes_only=z.downlink == "changes",
            mask=sensitive_mask(config) if z.params == "sensitive" else None,
            **fedavg_kwargs,
        )

    def hybrid_tensors(self) -> Tensors:
        """The global values of the modules that train first-order; empty without zo.hybrid."""
        return {k: v for k, v in self.model.trainable.items() if k != keys.SEED_SUMS}

    def state_tensors(self) -> Tensors:
        return {
            **super().state_tensors(),
            f"{STATE_PREFIX}amplitude-sums": self.amplitude_sums,
            f"{STATE_PREFIX}counts": self.counts,
        }

    def state_info(self) -> dict[str, Any]:
        return {**super().state_info(), "sums-version": self.ledger.version}

    def restore(self, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
        """The sums, their version and Pro's record; no node is known to hold any version
        (the nodes of a resumed run are new), so each gets the sums in full first."""
        super().restore(tensors, info)
        self.amplitude_sums = tensors[f"{STATE_PREFIX}amplitude-sums"].double()
        self.counts = tensors[f"{STATE_PREFIX}counts"].double()
        self.ledger = SumsLedger(
            self.model.trainable[keys.SEED_SUMS].clone(), version=int(info["sums-version"])
        )

    def probabilities(self) -> torch.Tensor:
        return seed_probabilities(self.amplitude_sums, self.counts)

    def messages_to(
        self, kind: str, server_round: int, nodes: Sequence[int], shared: ConfigRecord
    ) -> list[Message]:
        """Each node's own downlink: the sums in full, or what changed since the version it
        holds."""
        message_type = MessageType.TRAIN if kind == "train" else MessageType.EVALUATE
        messages = []
        for node in nodes:
            new_node = node not in self.ledger.held
            arrays, base = self.ledger.payload(node, self.changes_only)
            arrays.update(self.hybrid_tensors())  # a few KB, whole each time: heads move a lot
            if self.mask is not None and new_node:
                arrays.update(mask_arrays(self.mask))
            if self.pro and kind == "train":
                arrays[keys.SEED_PROBABILITIES] = self.probabilities()
            config = ConfigRecord(
                {
                    keys.SERVER_ROUND: server_round,
                    keys.SUMS_VERSION: self.ledger.version,
                    keys.SUMS_BASE_VERSION: base,
                    **shared,
                }
            )
            content = RecordDict({keys.ARRAYS: tensors_to_record(arrays), keys.CONFIG: config})
            messages.append(Message(content=content, message_type=message_type, dst_node_id=node))
        self.sent_version[kind] = self.ledger.version
        self.sampled[kind] = list(nodes)
        return messages

    def settle(self, kind: str, replies: Sequence[Message]) -> None:
        """Nodes that answered hold the version they were sent; others may not, so forget them."""
        answered = {m.metadata.src_node_id for m in replies if not m.has_error()}
        for node in self.sampled[kind]:
            if node in answered:
                self.ledger.confirm(node, self.sent_version[kind])
            else:
                self.ledger.forget(node)

    def client_delta(self, update: Mapping[str, torch.Tensor]) -> Tensors:
        """A client's steps as one vector over the pool: how far it moves each seed's sum."""
        steps = [(update[keys.SEED_INDICES], update[keys.SEED_SCALARS])]
        hybrid = {k: update[k] - v for k, v in self.hybrid_tensors().items()}
        return {keys.SEED_SUMS: aggregate_seed_scalars(steps, [1.0], self.pool_size), **hybrid}

    def apply_mean_delta(self, delta: Mapping[str, torch.Tensor]) -> None:
        sums = self.ledger.sums + delta[keys.SEED_SUMS]
        self.ledger.advance(sums)
        hybrid = {k: v + delta[k] for k, v in self.hybrid_tensors().items()}
        self.model = GlobalModel({keys.SEED_SUMS: sums, **hybrid})

    def observe(self, updates: Sequence[Tensors]) -> None:
        """FedKSeed-Pro's record of how large each seed's scalars have been."""
        for update in updates:
            indices = update[keys.SEED_INDICES].long()
            clipped = update[keys.SEED_SCALARS].double().clamp(-self.pro_clip, self.pro_clip).abs()
            self.amplitude_sums.index_add_(0, indices, clipped)
            self.counts.index_add_(0, indices, torch.ones_like(clipped))

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        steps = [(u[keys.SEED_INDICES], u[keys.SEED_SCALARS]) for u in updates]
        self.observe(updates)
        hybrid = {
            k: weighted_mean([u[k] for u in updates], weights) - v
            for k, v in self.hybrid_tensors().items()
        }
        self.apply_mean_delta(
            {keys.SEED_SUMS: aggregate_seed_scalars(steps, weights, self.pool_size), **hybrid}
        )
