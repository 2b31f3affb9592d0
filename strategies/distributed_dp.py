"""Client-level DP whose noise the clients add (distributed discrete Gaussian under SecAgg+).

The server samples clients in secret at rate q as for central client-level DP, and divides the
unmasked sum by the same fixed denominator q·N, but adds no noise: the sum already carries the
clients' discrete Gaussian shares. Its ledger counts rounds, each the plan's subsampled RDP
(``federated.privacy.distributed_noise``). A round whose sum is not unmasked (too few survivors,
too many sampled, a failed protocol) releases nothing and is still counted: whether it fails may
depend on who was sampled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from federated.config import ConfigError, RunConfig
from federated.privacy.accounting import BudgetUnreachable
from federated.privacy.distributed_noise import DistributedPlan, run_plan
from federated.privacy.secret_randomness import secret_generator
from federated.protocol import message_keys as keys
from federated.secagg.protocol import Layout, layout
from strategies.client_dp import ClientLevelDp, RoundReport, Tensors

if TYPE_CHECKING:
    from strategies.strategy_wrapper import Strategy


def secure_layout(strategy: Strategy, config: RunConfig) -> Layout:
    """What one client's update holds under SecAgg+: the tensors it was sent and sends back,
    or for zeroth-order training one sum per seed of the pool."""
    if strategy.reply_kind != "tensors":
        return [(keys.SEED_SUMS, (config.zo.pool_size,))]
    return layout(strategy.reply_reference(), strategy.train_payload().trainable)


def update_dimension(strategy: Strategy, config: RunConfig) -> int:
    """The entries of one client's update under SecAgg+."""
    return sum(int(np.prod(shape)) for _, shape in secure_layout(strategy, config))


@dataclass
class DistributedRoundReport(RoundReport):
    """Also the epsilon against the server, which knows whom it sampled: no amplification by
    sampling, as if a client had taken part in every round so far (the worst case)."""

    epsilon_against_server: float


class DistributedClientDp(ClientLevelDp):
    """The server's side of distributed DP for updates of ``dimension`` entries."""

    def __init__(self, config: RunConfig, dimension: int) -> None:  # noqa: PLW0231
        self.dp = config.dp
        self.sample_rate = config.strategy.fraction_train
        try:
            self.plan: DistributedPlan = run_plan(config, dimension)
        except BudgetUnreachable as err:
            raise ConfigError(
                f"run config 'dp.target-epsilon' = {config.dp.target_epsilon:g}: {err}"
            ) from None
        self.noise_multiplier = self.plan.noise_multiplier
        self.bound = self.dp.client.clip_norm
        self.rounds = 0
        self.last_spent: int | None = None
        self.generator = secret_generator("client-level")
        self.population = 0
        self._released: tuple[float, float | None, float] | None = None

    def state(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "bound": self.bound}

    def restore(self, state: Mapping[str, Any]) -> None:
        if "rounds" not in state:
            raise ValueError("the checkpoint's client-level DP is not distributed")
        self.rounds = int(state["rounds"])

    def epsilon_after_round(self) -> float:
        return self.plan.epsilon(self.rounds + 1)

    def aggregate(
        self, deltas: Sequence[Mapping[str, torch.Tensor]], zero: Mapping[str, torch.Tensor]
    ) -> Tensors:
        raise RuntimeError("distributed DP aggregates only SecAgg+ sums")

    def from_sum(self, total: Mapping[str, torch.Tensor], centred: float | None) -> Tensors:
        """The mean from a sum that already carries the clients' noise (its round was counted
        before the server asked for the shares that unmask it)."""
        expected = self.sample_rate * self.population
        self._released = (self.bound, None, expected)
        return {key: value.double() / expected for key, value in total.items()}

    def spend_round(self, server_round: int) -> None:
        """Count ``server_round``, released or not; counting it again changes nothing."""
        if self.last_spent != server_round:
            self.rounds += 1
            self.last_spent = server_round

    def report(self) -> DistributedRoundReport | None:
        if self.rounds == 0:
            return None
        bound, fraction, expected = self._released or (self.bound, None, 0.0)
        return DistributedRoundReport(
            bound,
            fraction,
            expected,
            self.plan.epsilon(self.rounds),
            self.plan.epsilon(self.rounds, sample_rate=1.0),
        )
