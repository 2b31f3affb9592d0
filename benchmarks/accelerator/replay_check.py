"""Do a CPU and a GPU rebuild the same weights from the same seeds?

A zeroth-order step's perturbation z is drawn on the CPU from a ``torch.Generator`` seeded from
the pool and cast to the weight's device (``federated.zo.perturbation``), so the draw itself is
device-independent by construction. What may differ is the arithmetic that applies it: a dense
perturbation is one scaled add per weight, a low-rank one an outer product (``addr_``), and
replaying many seeds (``federated.zo.replay``) sums them, the low-rank structure as one matrix
product per weight, whose summation order is the device's own.

Two copies of one model with its LoRA adapter, one on each device, take the same steps: one
seed's perturbation (``perturb_``) and then the replay of a pool's sums of scalars (``replay_``);
after each, the largest absolute difference between the copies' weights, and whether they are
equal bit for bit. The draw alone is compared too: the same perturbation of zeros, at scale 1.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch

from benchmarks.accelerator.models import build, run_config
from federated.model.numerics import PLAIN_FP32
from federated.zo.perturbation import STRUCTURES, Target, perturb_
from federated.zo.replay import replay_
from federated.zo.seed_pool import SeedPool
from federated.zo.targets import zo_targets

LR, EPS = 1e-3, 1e-3


def _difference(first: list[Target], second: list[Target]) -> tuple[float, bool]:
    """The largest absolute difference over all targets, and whether every one is equal."""
    largest, equal = 0.0, True
    for a, b in zip(first, second, strict=True):
        other = b.tensor.detach().to(a.tensor.device)
        largest = max(largest, float((a.tensor.detach() - other).abs().max()))
        equal = equal and torch.equal(a.tensor.detach(), other)
    return largest, equal


def replay_rows(cases: tuple[tuple[str, str, int], ...], device: torch.device) -> Iterator[dict]:
    """For each (model, parameter set, seeds in the pool) and structure: the CPU copy against the
    ``device`` copy after one perturbation and after the replay."""
    for name, param_set, pool_size in cases:
        pool = SeedPool.from_run_seed(0, pool_size)
        sums = torch.randn(pool_size, generator=torch.Generator().manual_seed(2))
        base = build(run_config(name, 1, 8), PLAIN_FP32, torch.device("cpu"))
        for structure in STRUCTURES:
            here = copy.deepcopy(base)
            there = copy.deepcopy(base).to(device)
            pairs = (zo_targets(here, param_set), zo_targets(there, param_set))
            row = {
                "model": name,
                "params": param_set,
                "structure": structure,
                "seeds": pool_size,
                "entries": sum(t.size for t in pairs[0]),
                "device": device.type,
            }
            zeros = tuple(
                [Target(torch.zeros_like(t.tensor), t.indices) for t in targets]
                for targets in pairs
            )
            for targets in zeros:  # 0 + 1·z: the draw itself, as it reaches each device
                perturb_(targets, pool[0], 1.0, structure)
            row["draw_max_abs_diff"], row["draw_bit_exact"] = _difference(*zeros)
            for targets in pairs:
                perturb_(targets, pool[0], EPS, structure)
            row["perturb_max_abs_diff"], row["perturb_bit_exact"] = _difference(*pairs)
            for targets in pairs:
                replay_(targets, pool, sums, LR, structure)
            row["replay_max_abs_diff"], row["replay_bit_exact"] = _difference(*pairs)
            row["replay_max_abs_change"] = max(
                float((t.tensor.detach() - b.tensor.detach()).abs().max())
                for t, b in zip(pairs[0], zo_targets(base, param_set), strict=True)
            )
            yield row
