"""Randomness of a private mechanism: Poisson batches and a generator nobody can replay.

Sampling and noise come from the OS's entropy, never from the run seed: anyone who knows the run
config could otherwise regenerate the noise, and sampling that can be replayed gives no privacy
amplification.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch


def secret_generator() -> torch.Generator:
    """A generator nobody can reproduce from the run config."""
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little"))


def poisson_batches(
    num_examples: int, sample_rate: float, steps: int, generator: torch.Generator
) -> Iterator[list[int]]:
    """``steps`` batches, each example in each independently with probability ``sample_rate``."""
    for _ in range(steps):
        mask = torch.rand(num_examples, generator=generator) < sample_rate
        yield torch.nonzero(mask, as_tuple=False).flatten().tolist()
