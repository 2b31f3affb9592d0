"""Poisson sampling, as the accountant's amplification by sampling assumes it: every item is
included independently with the same probability, from a secret generator
(``federated.privacy.secret_randomness``), so the size of a draw varies and can be zero."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch

Item = TypeVar("Item")


def poisson_subset(items: Sequence[Item], rate: float, generator: torch.Generator) -> list[Item]:
    """Each of ``items`` independently with probability ``rate``, in their order."""
    mask = torch.rand(len(items), generator=generator) < rate
    return [item for item, chosen in zip(items, mask.tolist(), strict=True) if chosen]


def poisson_batches(
    num_examples: int, sample_rate: float, steps: int, generator: torch.Generator
) -> Iterator[list[int]]:
    """``steps`` batches, each example in each independently with probability ``sample_rate``."""
    indices = range(num_examples)
    for _ in range(steps):
        yield poisson_subset(indices, sample_rate, generator)
