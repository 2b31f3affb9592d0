"""The differential-privacy section: record-level DP on clients, client-level DP on the server."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.dp_defaults import auto_help
from federated.config.options import option


@dataclass(frozen=True)
class PrivacySettings:
    record_level: bool = option(
        False,
        "Record-level DP on every client: DP-SGD with opacus for LoRA (Poisson sampling, "
        "per-sample clipping, Gaussian noise); clipped, noised scalar gradients for zo.",
    )
    noise_multiplier: float = option(
        0.0,
        "Noise standard deviation over the clipping bound (0: the smallest that keeps "
        "dp.target-epsilon over every round of the run).",
        minimum=0.0,
    )
    target_epsilon: float = option(
        0.0,
        "A client's budget for the whole run (0: none, then dp.noise-multiplier must be set). "
        "A client whose next round would spend past it does not train.",
        minimum=0.0,
    )
    delta: float = option(1e-5, "The delta of (epsilon, delta)-DP.", above=0.0, maximum=0.1)
    max_grad_norm: float = option(
        1.0,
        "Per-example clipping bound: of the LoRA gradient, or of the zo scalar gradient.",
        above=0.0,
    )
    count_noise: float = option(
        20.0,
        "Std of the Gaussian noise on the record count a record-level DP client releases once "
        "a run; its sampling rate and averaging weight come from that noised count.",
        above=0.0,
    )
    physical_batch: int = option(
        -1,
        "Examples per forward and backward pass of a DP-SGD step (virtual steps): a Poisson "
        "batch of expected size train.batch-size is taken in chunks this large, their clipped "
        "per-example gradients summed before the noise is added once, so the step, its noise "
        "and its accounting are those of the whole batch. 0: the whole batch at once; "
        f"-1: {auto_help('dp.physical-batch')}.",
        minimum=-1,
    )
    grad_sample_mode: str = option(
        "hooks",
        "How opacus gets per-sample gradient norms: hooks, functorch, or ghost (ghost "
        "clipping: norms without materialising per-sample gradients).",
        choices=("hooks", "functorch", "ghost"),
    )
    client_level: bool = option(
        False,
        "Client-level DP on the server (DP-FedAvg): each client joins a round with probability "
        "strategy.fraction-train (secret Poisson sampling), its update is clipped, Gaussian "
        "noise joins their sum, every round is accounted. Linear strategies only.",
    )
    client_noise_multiplier: float = option(
        0.0,
        "Noise std over the clip bound of client-level DP (0: the smallest that keeps "
        "dp.client-target-epsilon over every round).",
        minimum=0.0,
    )
    client_target_epsilon: float = option(
        0.0,
        "The run's client-level budget (0: none); training stops before a round that would "
        "spend past it.",
        minimum=0.0,
    )
    client_clip_norm: float = option(
        1.0, "L2 bound of one client's update (the start value when adaptive).", above=0.0
    )
    client_adaptive_clip: bool = option(
        False,
        "Adapt the bound each round towards a quantile of the clients' update norms, from a "
        "noised count (Andrew et al., 2021).",
    )
    client_clip_quantile: float = option(
        0.5,
        "Adaptive clipping: share of clients whose update the bound should not clip.",
        above=0.0,
        maximum=1.0,
    )
    client_clip_lr: float = option(
        0.2, "Adaptive clipping: geometric learning rate of the bound.", above=0.0
    )
    client_count_noise: float = option(
        0.0,
        "Adaptive clipping: noise std of the count of unclipped clients, each counted as +-1/2 "
        "(0: expected clients per round / 20).",
        minimum=0.0,
    )
    distributed: bool = option(
        False,
        "Client-level DP's noise added by the clients, under SecAgg+ (distributed discrete "
        "Gaussian): each clips, scales and rounds its update to integers and adds its share of "
        "the noise, so the server never sees a noise-free sum. Needs dp.client-level and "
        "secagg.enabled, fixed clipping.",
    )

    distributed_dropout: float = option(
        0.2,
        "Distributed DP: the share of a round's expected clients that may drop out. Each client's "
        "noise is sized for the rest; a round with fewer is never unmasked, and still spends.",
        minimum=0.0,
        maximum=0.9,
    )

    @property
    def quiet_clients(self) -> bool:
        """Whether clients keep exact functions of their data (losses, times, held-out metrics,
        record counts) to themselves: under any DP, since no accountant covers them."""
        return self.record_level or self.client_level
