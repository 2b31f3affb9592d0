"""The zeroth-order section: what the seeds perturb, the pool, the step, the downlink."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class ZoSettings:
    params: str = option(
        "full",
        "What zeroth-order steps train: full (every weight), lora (the LoRA factors and a head), "
        "sparse (the largest-magnitude entries of each matrix, and every vector) or sensitive "
        "(the entries of largest squared gradient on a calibration sample, ranked over all "
        "matrices, and every vector; the server finds them and sends each node the mask once).",
        choices=("full", "lora", "sparse", "sensitive"),
    )
    perturbation: str = option(
        "dense",
        "dense (every entry random, as FedKSeed) or low-rank (u·vᵀ per matrix: replaying K seeds "
        "becomes one matrix product per matrix).",
        choices=("dense", "low-rank"),
    )
    pool_size: int = option(4096, "K, the candidate seeds shared by the run.", minimum=1)
    lr: float = option(
        0.0,
        "Constant learning rate of the zeroth-order steps. 0 (auto): the server probes it before "
        "round 1 on calibration examples (10x below the largest rate of 1e-1, 3e-2, ... 1e-8 "
        "that kept the loss from rising for 40 steps) and sends it to the clients; in a "
        "LoRA run, ZO steps on the factors take 3e-4.",
        minimum=0.0,
    )
    eps: float = option(1e-3, "Perturbation scale of the two-point estimate.", above=0.0)
    sparse_fraction: float = option(
        0.01,
        "sparse and sensitive: share of the matrices' entries that train (sensitive works at "
        "0.001).",
        above=0.0,
        maximum=1.0,
    )
    frozen_dtype: str = option(
        "float32",
        "sparse and sensitive: the precision in which every device (and the server) stores the "
        "matrices; the trained entries stay float32 beside them and compute stays float32.",
        choices=("float32", "bfloat16", "float16"),
    )
    calibration_examples: int = option(
        64,
        "sensitive: examples of data.name, outside the server's test set, whose squared "
        "gradients rank the entries.",
        minimum=1,
    )
    pro: bool = option(
        False, "FedKSeed-Pro: sample seeds by the size of their past scalars, not uniformly."
    )
    pro_clip: float = option(
        0.5,
        "FedKSeed-Pro: scalars are clipped to this size before their mean sets a seed's weight.",
        above=0.0,
    )
    momentum: float = option(
        0.0,
        "Heavy-ball momentum of a client's steps in seed space; its pairs become each seed's "
        "applied total (at most one per step), so replay stays exact. 0: plain steps.",
        minimum=0.0,
        maximum=0.99,
    )
    hybrid: str = option(
        "",
        "Modules that train first-order beside the zeroth-order steps and travel as tensors: head "
        "(the classification head) or module names, comma-separated; empty: none.",
    )
    hybrid_lr: float = option(
        0.05, "Learning rate of the hybrid modules' SGD steps (zo.hybrid).", above=0.0
    )
    downlink: str = option(
        "changes",
        "What the server sends: all K seed sums, or only those that changed since the client "
        "last synced (from zero for a new one), as index-sum pairs or all K if that is smaller.",
        choices=("sums", "changes"),
    )
