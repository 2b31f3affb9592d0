"""The randomness privacy rests on: noise and sampling that nobody can replay.

Private mechanisms never draw from the run seed: anyone holding the run config could regenerate
the noise, and a sample that can be replayed gives no amplification by sampling.

Where opacus's cryptographic generator (``torchcsprng``) imports, every secret generator reads
``/dev/urandom`` through it, as opacus's secure mode does. ``torchcsprng`` has no build for the
torch this project pins, so otherwise a secret generator is torch's Mersenne Twister seeded with
64 bits from the OS: nobody can predict it without the seed, but it is not a cryptographic
generator. Gaussian noise is drawn as opacus's secure mode draws it in either case (the sum of
four draws, halved), which defeats attacks on the floating-point representation of one draw.

Tests that compare runs fix every secret generator with ``FEDTUNE_INSECURE_DP_SEED``: each then
depends only on that value and its purpose. A run with it set has no privacy and says so.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from functools import cache

import numpy as np
import torch

# Flower's own logger, by name: the trainers draw from here where Flower is not installed.
_FLOWER_LOG = logging.getLogger("flwr")

INSECURE_SEED_ENV = "FEDTUNE_INSECURE_DP_SEED"


@cache
def _warn_insecure(value: str) -> None:
    _FLOWER_LOG.warning(
        "%s=%s: privacy noise and sampling are replayable; this process has no privacy",
        INSECURE_SEED_ENV,
        value,
    )


def _csprng_generator() -> torch.Generator | None:
    try:
        import torchcsprng  # type: ignore[import-not-found]
    except ImportError:
        return None
    return torchcsprng.create_random_device_generator("/dev/urandom")


def secret_generator(*purpose: object) -> torch.Generator:
    """A generator for one private mechanism; ``purpose`` names it (e.g. the mechanism, the
    partition, the round) so that a fixed test seed still gives each mechanism its own stream."""
    fixed = os.environ.get(INSECURE_SEED_ENV)
    if fixed is not None:
        _warn_insecure(fixed)
        label = "/".join(map(str, (fixed, *purpose))).encode()
        return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(label).digest()[:8]))
    return _csprng_generator() or torch.Generator().manual_seed(
        int.from_bytes(os.urandom(8), "little")
    )


def on_device(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with 64 bits of ``generator`` (itself on the CPU): torch
    draws on a device only from a generator there. On the CPU, ``generator`` itself."""
    if device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def secret_numpy_generator(*purpose: object) -> np.random.Generator:
    """A numpy generator for integer noise (distributed DP): PCG64 seeded with 256 bits from the
    OS, or fixed by ``FEDTUNE_INSECURE_DP_SEED`` as ``secret_generator`` is."""
    fixed = os.environ.get(INSECURE_SEED_ENV)
    if fixed is not None:
        _warn_insecure(fixed)
        label = "/".join(map(str, (fixed, *purpose))).encode()
        return np.random.default_rng(int.from_bytes(hashlib.sha256(label).digest()))
    return np.random.default_rng(int.from_bytes(os.urandom(32), "little"))


def gaussian_noise(
    shape: Sequence[int], std: float, generator: torch.Generator, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """N(0, std²) entries, each the halved sum of four draws (opacus's secure mode)."""
    total = torch.zeros(tuple(shape), dtype=dtype)
    if std == 0:
        return total
    for _ in range(4):
        total += torch.normal(0.0, std, size=tuple(shape), generator=generator, dtype=dtype)
    return total / 2
