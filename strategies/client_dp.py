"""Client-level DP on the server: DP-FedAvg with fixed or adaptive clipping, our own accounting.

Each round, every client's update (how far it moves the global model) is clipped to L2 norm S;
the clipped updates are summed, Gaussian noise of std σ·S is added to the sum, and the mean
(every client weighs the same, so that one client's influence is bounded by S) moves the global
model. That is the sampled Gaussian mechanism once per round, accounted with opacus's RDP
accountant at the round's sampling rate (clients sampled / connected): Flower's own accountant
assumes the stock FedAvg aggregation, so the events are composed here.

Adaptive clipping (Andrew et al., 2021, https://arxiv.org/abs/1905.03871) moves S towards the
γ-quantile of the update norms from a noised count of unclipped clients, and splits the privacy
between the count and the update: σ_update = (σ⁻² − (2σ_count)⁻²)^(-1/2) keeps the pair as
private as one Gaussian mechanism with multiplier σ.

It needs the aggregate to be the mean of the client deltas, so it serves linear strategies only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from federated.config import ConfigError, PrivacySettings
from federated.privacy.accounting import PrivacyLedger, noise_for_budget
from federated.privacy.clipping import clip_update, update_norm
from federated.privacy.sampling import secret_generator

Tensors = dict[str, torch.Tensor]


def split_noise(noise_multiplier: float, count_noise: float) -> float:
    """The update's noise multiplier when a noised count shares the privacy (adaptive clipping)."""
    remaining = noise_multiplier**-2 - (2 * count_noise) ** -2
    if remaining <= 0:
        raise ConfigError(
            f"run config 'dp.client-count-noise' = {count_noise:.3g}: adaptive clipping needs it "
            f"above half the client noise multiplier ({noise_multiplier / 2:.3g})"
        )
    return remaining**-0.5


@dataclass
class RoundReport:
    """What one private aggregation did, for metrics.jsonl and the log."""

    clip_norm: float
    clipped_fraction: float
    epsilon: float


class ClientLevelDp:
    """The server's client-level mechanism and its ledger over the run.

    ``sample_rate_bound`` is the largest share of clients a round can sample; with
    ``dp.client-target-epsilon`` alone, the noise is set so that ``rounds`` rounds at that rate
    stay within the budget. ``clients_per_round`` (at least) sets the default count noise.
    """

    def __init__(
        self, dp: PrivacySettings, sample_rate_bound: float, rounds: int, clients_per_round: int
    ) -> None:
        self.dp = dp
        self.noise_multiplier = dp.client_noise_multiplier or noise_for_budget(
            dp.client_target_epsilon, dp.delta, sample_rate_bound, rounds
        )
        self.count_noise = dp.client_count_noise or clients_per_round / 20
        self.update_noise = self.noise_multiplier
        if dp.client_adaptive_clip:
            self.update_noise = split_noise(self.noise_multiplier, self.count_noise)
        self.bound = dp.client_clip_norm
        self.ledger = PrivacyLedger()
        self.generator = secret_generator()
        self.sample_rate = sample_rate_bound  # the round loop sets each round's actual rate
        self.last: RoundReport | None = None

    def epsilon_after_round(self, sample_rate: float) -> float:
        return self.ledger.epsilon_after(self.noise_multiplier, sample_rate, 1, self.dp.delta)

    def budget_allows(self, sample_rate: float) -> bool:
        budget = self.dp.client_target_epsilon
        return not budget or self.epsilon_after_round(sample_rate) <= budget

    def aggregate(self, deltas: Sequence[Mapping[str, torch.Tensor]]) -> Tensors:
        """The private mean of the clients' deltas, clipped here; the round is spent."""
        norms = [update_norm(d) for d in deltas]
        clipped = [clip_update(d, self.bound) for d in deltas]
        total = {k: torch.stack([c[k] for c in clipped]).sum(0) for k in clipped[0]}
        return self.from_sum(total, len(deltas), sum(n <= self.bound for n in norms))

    def from_sum(
        self, total: Mapping[str, torch.Tensor], clients: int, unclipped: float | None
    ) -> Tensors:
        """The private mean from the sum of ``clients`` updates each within the bound (clipped
        here, or by the clients themselves under SecAgg+, which lets the server see only the
        sum). ``unclipped`` counts those the bound did not cut (adaptive clipping)."""
        dp, bound = self.dp, self.bound
        mean = {}
        for key, value in total.items():
            noise = torch.randn(value.shape, generator=self.generator, dtype=torch.float64)
            mean[key] = (value.double() + noise * self.update_noise * bound) / clients
        if dp.client_adaptive_clip and unclipped is not None:
            draw = float(torch.randn((), generator=self.generator))
            noised = unclipped + draw * self.count_noise
            self.bound = bound * math.exp(
                -dp.client_clip_lr * (noised / clients - dp.client_clip_quantile)
            )
        self.ledger.spend(self.noise_multiplier, self.sample_rate, 1)
        clipped_fraction = 1 - unclipped / clients if unclipped is not None else math.nan
        self.last = RoundReport(bound, clipped_fraction, self.ledger.epsilon(dp.delta))
        return {k: v.to(total[k].dtype) for k, v in mean.items()}
