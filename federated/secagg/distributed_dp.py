"""The integer vectors of distributed DP under SecAgg+, and the sum the server decodes from them.

A client's vector is [1, x + z]: a 1 that counts it (so the server can check how many vectors
the sum holds), x its update clipped to S, divided by γ and rounded at random to integers of L2
norm at most Δ, and z its discrete Gaussian noise, all as integers modulo 2^32 (negative entries
wrap to the top of the field and wrap back in the sum). The plan (S, γ, Δ, σ) comes from the run
config, never from the server's messages.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from federated.privacy.clipping import clip_update
from federated.privacy.discrete_gaussian import discrete_gaussian
from federated.privacy.distributed_noise import DistributedPlan
from federated.secagg.masking import MOD
from federated.secagg.protocol import Layout

MAX_ROUNDING_DRAWS = 1000  # each draw keeps the norm within Δ with probability over 1 − β


def conditional_round(scaled: np.ndarray, bound: float, rng: np.random.Generator) -> np.ndarray:
    """Unbiased random rounding of ``scaled`` to integers, drawn again until the L2 norm of the
    result is at most ``bound``."""
    floor = np.floor(scaled)
    for _ in range(MAX_ROUNDING_DRAWS):
        rounded = floor + (rng.random(scaled.shape) < scaled - floor)
        if float(np.linalg.norm(rounded)) <= bound:
            return rounded.astype(np.int64)
    raise RuntimeError(f"no rounding within norm {bound:.6g} in {MAX_ROUNDING_DRAWS} draws")


def noised_vector(
    delta: Mapping[str, torch.Tensor], plan: DistributedPlan, rng: np.random.Generator
) -> np.ndarray:
    """A client's [1, x + z] for its update ``delta`` (tensors in the layout's order)."""
    clipped = clip_update(dict(delta), plan.clip)
    flat = np.concatenate([t.double().numpy().ravel() for t in clipped.values()])
    if flat.size != plan.dimension:
        raise ValueError(f"an update of {flat.size} entries; the plan is for {plan.dimension}")
    rounded = conditional_round(flat / plan.granularity, plan.bound, rng)
    noised = rounded + discrete_gaussian(flat.size, plan.local_std, rng)
    return np.concatenate([[1], noised]) % MOD


def decode_sum(
    total: np.ndarray, spec: Layout, plan: DistributedPlan
) -> tuple[int, dict[str, torch.Tensor]]:
    """From the unmasked sum modulo 2^32: how many vectors it holds, and the noised sum of their
    updates per tensor, in the update's units (float64)."""
    signed = np.where(total >= MOD // 2, total - MOD, total).astype(np.int64)
    floats = signed[1:].astype(np.float64) * plan.granularity
    tensors, offset = {}, 0
    for name, shape in spec:
        size = int(np.prod(shape))
        tensors[name] = torch.from_numpy(floats[offset : offset + size].reshape(shape).copy())
        offset += size
    return int(signed[0]), tensors
