"""Client-level DP on the server: DP-FedAvg with fixed or adaptive clipping, our own accounting.

Neighbouring federations differ in the whole data of one client, whose update may then be
anything within the clip bound, or nothing (zero-out adjacency: which devices are connected is
public, what they hold is not). Each round:

1. every connected client joins independently with probability q (``strategy.fraction-train``),
   drawn from a secret generator: Poisson sampling, so a draw's size varies and can be zero;
2. every sampled client's update (how far it moves the global model) is clipped to L2 norm S, by
   the server or, under SecAgg+, by the client; a reply that is missing or rejected adds nothing;
3. Gaussian noise of std σ·S joins the sum, which is divided by a fixed denominator, the expected
   number of clients q·N (N connected when the round sampled), never by how many replied.

That is the sampled Gaussian mechanism once a round at rate q, composed with opacus's RDP
accountant: Flower's own accountant assumes its stock FedAvg aggregation, so the events are
composed here.

Adaptive clipping (Andrew et al., 2021, https://arxiv.org/abs/1905.03871): each sampled client
also adds b − ½ to a count, b saying whether its update was within S; with N(0, σ_b²) added,
b̃ = ½ + (Σ(b − ½) + noise) / (q·N) is the noised share of unclipped clients, and S moves by
exp(−η·(b̃ − γ)). Centred, one client moves the count by at most ½, so the count is a Gaussian
mechanism of multiplier 2σ_b; released with the update (multiplier σ_Δ) the pair is one Gaussian
mechanism of multiplier (σ_Δ⁻² + (2σ_b)⁻²)^(-1/2), and σ_Δ = (σ⁻² − (2σ_b)⁻²)^(-1/2) makes it σ,
the multiplier the ledger composes.

It needs the aggregate to be the mean of the client deltas, so it serves linear strategies only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from federated.config import ConfigError, PrivacySettings
from federated.privacy.accounting import BudgetUnreachable, PrivacyLedger, noise_for_budget
from federated.privacy.clipping import clip_update, update_norm
from federated.privacy.sampling import poisson_subset
from federated.privacy.secret_randomness import gaussian_noise, secret_generator

Tensors = dict[str, torch.Tensor]


def split_noise(noise_multiplier: float, count_noise: float) -> float:
    """The update's noise multiplier when a count of centred bits, noised with std
    ``count_noise``, shares the privacy (adaptive clipping)."""
    remaining = noise_multiplier**-2 - (2 * count_noise) ** -2
    if remaining <= 0:
        raise ConfigError(
            f"run config 'dp.client.count-noise' = {count_noise:.3g}: adaptive clipping needs it "
            f"above half the client noise multiplier ({noise_multiplier / 2:.3g})"
        )
    return remaining**-0.5


@dataclass
class RoundReport:
    """What one private aggregation released about itself, for metrics.jsonl and the log."""

    clip_norm: float  # the bound this round's updates were clipped to
    noised_unclipped_fraction: float | None  # adaptive clipping's b̃; None when fixed
    expected_clients: float  # q·N, the mean's denominator
    epsilon: float


class ClientLevelDp:
    """The server's client-level mechanism, its secret sampling and its ledger over the run.

    ``sample_rate`` is q, each connected client's chance to join a round; with
    ``dp.target-epsilon`` alone the noise is set so that ``rounds`` rounds stay within the
    budget. ``expected_clients`` (q times the nodes the run waits for) sets the default count
    noise of adaptive clipping. ``floor``: adaptive clipping never takes the bound below it
    (under SecAgg+, twice what rounding can add, so a client keeps half its bound).
    """

    def __init__(
        self,
        dp: PrivacySettings,
        sample_rate: float,
        rounds: int,
        expected_clients: float,
        floor: float = 0.0,
    ) -> None:
        self.dp = dp
        self.sample_rate = sample_rate
        try:
            self.noise_multiplier = dp.noise_multiplier or noise_for_budget(
                dp.target_epsilon, dp.delta, sample_rate, rounds
            )
        except BudgetUnreachable as err:
            raise ConfigError(
                f"run config 'dp.target-epsilon' = {dp.target_epsilon:g}: {err}"
            ) from None
        self.count_noise = dp.client.count_noise or max(1.0, expected_clients) / 20
        self.update_noise = self.noise_multiplier
        if dp.client.adaptive_clip:
            self.update_noise = split_noise(self.noise_multiplier, self.count_noise)
        self.bound = dp.client.clip_norm
        self.floor = floor
        self.ledger = PrivacyLedger()
        self.generator = secret_generator("client-level")
        self.population = 0  # nodes connected when the current round sampled
        self._released: tuple[float, float | None, float] | None = None

    def state(self) -> dict[str, Any]:
        """What a resumed run needs: the ledger so far and adaptive clipping's bound."""
        return {"events": [list(e) for e in self.ledger.events], "bound": self.bound}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.ledger = PrivacyLedger([(float(n), float(q), int(t)) for n, q, t in state["events"]])
        self.bound = float(state["bound"])

    def sample(self, connected: Sequence[int]) -> list[int]:
        """This round's clients: each connected node independently at rate q, in secret."""
        self.population = len(connected)
        return poisson_subset(sorted(connected), self.sample_rate, self.generator)

    def epsilon_after_round(self) -> float:
        return self.ledger.epsilon_after(self.noise_multiplier, self.sample_rate, 1, self.dp.delta)

    def budget_allows(self) -> bool:
        budget = self.dp.target_epsilon
        return not budget or self.epsilon_after_round() <= budget

    def aggregate(
        self, deltas: Sequence[Mapping[str, torch.Tensor]], zero: Mapping[str, torch.Tensor]
    ) -> Tensors:
        """The private mean of the accepted clients' deltas, clipped here; ``zero`` gives the
        names and shapes of the sum when no client is in it. The round is spent."""
        total = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in zero.items()}
        centred = 0.0
        for delta in deltas:
            centred += 0.5 if update_norm(delta) <= self.bound else -0.5
            for key, value in clip_update(delta, self.bound).items():
                total[key] += value.double()
        return self.from_sum(total, centred)

    def from_sum(self, total: Mapping[str, torch.Tensor], centred: float | None) -> Tensors:
        """The private mean from the sum of updates each within the bound (clipped here, or by
        the clients themselves under SecAgg+, which gives the server only the sum). ``centred``
        is Σ(b − ½) over the summed clients (adaptive clipping; None without it). The mean is
        float64."""
        dp, bound, expected = self.dp, self.bound, self.sample_rate * self.population
        mean = {}
        for key, value in total.items():
            noise = gaussian_noise(value.shape, self.update_noise * bound, self.generator)
            mean[key] = (value.double() + noise) / expected
        noised_fraction = None
        if dp.client.adaptive_clip and centred is not None:
            noise = float(gaussian_noise((), self.count_noise, self.generator))
            noised_fraction = 0.5 + (centred + noise) / expected
            self.bound = max(
                self.floor,
                bound * math.exp(-dp.client.clip_lr * (noised_fraction - dp.client.clip_quantile)),
            )
        self.ledger.spend(self.noise_multiplier, self.sample_rate, 1)
        self._released = (bound, noised_fraction, expected)
        return mean

    def report(self) -> RoundReport | None:
        """What the last round released about itself, and the epsilon spent so far."""
        if self._released is None:
            return None
        return RoundReport(*self._released, self.ledger.epsilon(self.dp.delta))
