"""The zeroth-order section: what the seeds perturb, the pool, the step, the downlink."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class ZoSettings:
    params: str = option(
        "full",
        "What zeroth-order steps train: full (every weight), lora (the LoRA factors and a head) "
        "or sparse (the largest-magnitude entries of each matrix, and every vector).",
        choices=("full", "lora", "sparse"),
    )
    perturbation: str = option(
        "dense",
        "dense (every entry random, as FedKSeed) or low-rank (u·vᵀ per matrix: replaying K seeds "
        "becomes one matrix product per matrix).",
        choices=("dense", "low-rank"),
    )
    pool_size: int = option(4096, "K, the candidate seeds shared by the run.", minimum=1)
    lr: float = option(1e-5, "Constant learning rate of the zeroth-order steps.", above=0.0)
    eps: float = option(1e-3, "Perturbation scale of the two-point estimate.", above=0.0)
    sparse_fraction: float = option(
        0.01, "sparse: share of each matrix's entries that train.", above=0.0, maximum=1.0
    )
    pro: bool = option(
        False, "FedKSeed-Pro: sample seeds by the size of their past scalars, not uniformly."
    )
    pro_clip: float = option(
        0.5,
        "FedKSeed-Pro: scalars are clipped to this size before their mean sets a seed's weight.",
        above=0.0,
    )
    downlink: str = option(
        "changes",
        "What the server sends: all K seed sums, or only those that changed since the client "
        "last synced (from zero for a new one), as index-sum pairs or all K if that is smaller.",
        choices=("sums", "changes"),
    )
