"""The server's global model, as every strategy holds it, LoRA or seed-based, and as a
checkpoint stores it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from federated.protocol import message_keys as keys

Tensors = dict[str, torch.Tensor]


@dataclass
class GlobalModel:
    """The server's model: trainable tensors at the server's rank, and dense additions to the
    frozen base weight of adapted modules (by module name; empty for most strategies)."""

    trainable: Tensors
    base_delta: Tensors = field(default_factory=dict)

    def flat(self) -> Tensors:
        """One flat mapping, for checkpoints."""
        return {
            **self.trainable,
            **{f"{keys.BASE_DELTA}/{m}": t for m, t in self.base_delta.items()},
        }

    @classmethod
    def from_flat(cls, flat: Mapping[str, torch.Tensor]) -> GlobalModel:
        """The model ``flat`` wrote, from a mapping that may hold other (``strategy/``) keys."""
        prefix = f"{keys.BASE_DELTA}/"
        trainable = {k: v for k, v in flat.items() if "/" not in k}
        delta = {k.removeprefix(prefix): v for k, v in flat.items() if k.startswith(prefix)}
        return cls(trainable, delta)


def zo_initial_model(
    pool_size: int, hybrid: Mapping[str, torch.Tensor] | None = None
) -> GlobalModel:
    """A zeroth-order run's model before any round: zero seed sums, and the hybrid modules'
    seeded initial values (``zo.hybrid``)."""
    return GlobalModel({keys.SEED_SUMS: torch.zeros(pool_size), **(hybrid or {})})
