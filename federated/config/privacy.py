"""The differential-privacy section: one mode, its budget, and the options of each mechanism.

``dp.mode`` names what is protected and by whom: ``record`` (each client's records, DP-SGD on the
client), ``client`` (each client's whole contribution, clipping and noise on the server) or
``distributed`` (client-level DP whose noise the clients add under SecAgg+, so the server never
sees a noise-free sum). The budget (``dp.target-epsilon`` or ``dp.noise-multiplier``, at
``dp.delta``) is the mode's; each mechanism's own options sit in a section of their own below it
(``dp.record.*``, ``dp.client.*``, ``dp.distributed.*``), as ``robust.method`` picks among the
``robust.*`` options.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from federated.config.dp_defaults import auto_help
from federated.config.options import option

MODES = ("none", "record", "client", "distributed")
# The switches dp.mode replaced, and the mode each one meant: a config that sets one is told so.
REPLACED_SWITCHES = {
    "dp.record-level": "set dp.mode = 'record'",
    "dp.client-level": "set dp.mode = 'client'",
    "dp.distributed": "set dp.mode = 'distributed'",
}
# The modes each option section serves: distributed DP is client-level DP, noised elsewhere.
SECTION_MODES = {
    "record": ("record",),
    "client": ("client", "distributed"),
    "distributed": ("distributed",),
}


@dataclass(frozen=True)
class RecordLevelOptions:
    max_grad_norm: float = option(
        1.0,
        "Per-example clipping bound: of the LoRA gradient, or of the zo scalar gradient.",
        above=0.0,
    )
    count_noise: float = option(
        20.0,
        "Std of the Gaussian noise on the record count a client releases once a run; its "
        "sampling rate and averaging weight come from that noised count.",
        above=0.0,
    )
    physical_batch: int = option(
        -1,
        "Examples per forward and backward pass of a DP-SGD step (virtual steps): a Poisson "
        "batch of expected size train.batch-size is taken in chunks this large, their clipped "
        "per-example gradients summed before the noise is added once, so the step, its noise "
        "and its accounting are those of the whole batch. 0: the whole batch at once; "
        f"-1: {auto_help('dp.record.physical-batch')}.",
        minimum=-1,
    )
    grad_sample_mode: str = option(
        "hooks",
        "How opacus gets per-sample gradient norms: hooks, functorch, or ghost (ghost "
        "clipping: norms without materialising per-sample gradients).",
        choices=("hooks", "functorch", "ghost"),
    )


@dataclass(frozen=True)
class ClientLevelOptions:
    clip_norm: float = option(
        1.0, "L2 bound of one client's update (the start value when adaptive).", above=0.0
    )
    adaptive_clip: bool = option(
        False,
        "Adapt the bound each round towards a quantile of the clients' update norms, from a "
        "noised count (Andrew et al., 2021). dp.mode = client only.",
    )
    clip_quantile: float = option(
        0.5,
        "Adaptive clipping: share of clients whose update the bound should not clip.",
        above=0.0,
        maximum=1.0,
    )
    clip_lr: float = option(
        0.2, "Adaptive clipping: geometric learning rate of the bound.", above=0.0
    )
    count_noise: float = option(
        0.0,
        "Adaptive clipping: noise std of the count of unclipped clients, each counted as +-1/2 "
        "(0: expected clients per round / 20).",
        minimum=0.0,
    )


@dataclass(frozen=True)
class DistributedOptions:
    dropout: float = option(
        0.2,
        "The share of a round's expected clients that may drop out. Each client's noise is "
        "sized for the rest; a round with fewer is never unmasked, and still spends.",
        minimum=0.0,
        maximum=0.9,
    )


@dataclass(frozen=True)
class PrivacySettings:
    mode: str = option(
        "none",
        "none; record: DP-SGD with opacus on every client for LoRA (Poisson sampling, "
        "per-sample clipping, Gaussian noise), clipped, noised scalar gradients for zo; "
        "client: DP-FedAvg on the server (each client joins a round with probability "
        "strategy.fraction-train by secret Poisson sampling, its update is clipped, Gaussian "
        "noise joins their sum; linear strategies only); distributed: client-level DP whose "
        "noise the clients add under SecAgg+ (distributed discrete Gaussian; needs "
        "secagg.enabled).",
        choices=MODES,
    )
    noise_multiplier: float = option(
        0.0,
        "Noise standard deviation over the mode's clipping bound (0: the smallest that keeps "
        "dp.target-epsilon over every round of the run).",
        minimum=0.0,
    )
    target_epsilon: float = option(
        0.0,
        "The mode's budget for the whole run (0: none, then dp.noise-multiplier must be set): "
        "record, a client's; a client whose next round would spend past it does not train. "
        "client and distributed, the run's; training stops before a round past it.",
        minimum=0.0,
    )
    delta: float = option(1e-5, "The delta of (epsilon, delta)-DP.", above=0.0, maximum=0.1)
    record: RecordLevelOptions = field(default_factory=RecordLevelOptions)
    client: ClientLevelOptions = field(default_factory=ClientLevelOptions)
    distributed: DistributedOptions = field(default_factory=DistributedOptions)

    @property
    def record_level(self) -> bool:
        return self.mode == "record"

    @property
    def client_level(self) -> bool:
        """Client-level DP, noised by the server or by the clients."""
        return self.mode in ("client", "distributed")

    @property
    def distributed_noise(self) -> bool:
        return self.mode == "distributed"

    @property
    def quiet_clients(self) -> bool:
        """Whether clients keep exact functions of their data (losses, times, held-out metrics,
        record counts) to themselves: under any DP, since no accountant covers them."""
        return self.mode != "none"
