"""What a record-level DP client will spend over a run, worked out before the first round.

A client releases its record count once, noised (std ``dp.record.count-noise``), then samples each
step's records at q = ``train.batch-size`` / that noised count, with ``dp.noise-multiplier``, or
the smallest noise that keeps the count and every round of the run within ``dp.target-epsilon``
(``client.privacy_budget.RoundPrivacy``; the server cannot import client code, so this module
states the same rule, and a test holds the two equal).

With a fixed noise multiplier epsilon grows with q, so the client that spends most is the one
with the fewest records, and its q moves with the noise on its count: the line states epsilon at
the smallest partition's exact count, and a bound that holds unless a client's noised count
falls more than ``COUNT_NOISE_SIGMAS`` standard deviations below its records (p < 1e-9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from federated.config import RunConfig
from federated.model.workspace import client_indices
from federated.privacy.accounting import noise_for_budget
from federated.privacy.canaries import client_canary_count
from federated.privacy.record_count import COUNT_NOISE_SIGMAS, count_release


def partition_record_counts(config: RunConfig, num_partitions: int) -> list[int]:
    """Each partition's training records in the run's split of ``data.name``, with the audit's
    canaries it is dealt: the count its client releases, noised.

    Raises
    ------
    ValueError
        When the data cannot be split into ``num_partitions``.
    """
    return [
        len(client_indices(config, p, num_partitions)[0])
        + client_canary_count(config, p, num_partitions)
        for p in range(num_partitions)
    ]


def round_mechanism(config: RunConfig, count: int) -> tuple[float, float]:
    """(noise multiplier, sample rate) of each step of a client whose noised count is
    ``count``: q = batch / count, and the noise given or set for the budget over every round.
    The client's own mechanism (``client.privacy_budget.RoundPrivacy``) is this one."""
    dp = config.dp
    rate = min(1.0, config.train.batch_size / count)
    steps = _run_steps(config)
    noise = dp.noise_multiplier or _noise(
        dp.target_epsilon, dp.delta, rate, steps, dp.record.count_noise
    )
    return noise, rate


@lru_cache(maxsize=64)
def _noise(
    target_epsilon: float, delta: float, rate: float, steps: int, count_noise: float
) -> float:
    # A client sampled every round takes all these steps after its count: the noise is set for
    # that worst case.
    return noise_for_budget(target_epsilon, delta, rate, steps, count_release(count_noise))


def run_epsilon(config: RunConfig, count: int) -> float:
    """The epsilon a client whose noised count is ``count`` spends in the run if it trains in
    every round: its count's release, then every round's steps."""
    noise, rate = round_mechanism(config, count)
    release = count_release(config.dp.record.count_noise)
    return release.epsilon_after(noise, rate, _run_steps(config), config.dp.delta)


def _run_steps(config: RunConfig) -> int:
    return config.train.local_steps * config.num_server_rounds


@dataclass(frozen=True)
class PlannedEpsilon:
    """The run's worst client: the one with the fewest records, trained in every round."""

    epsilon: float  # what no client passes: the noise's bound, or dp.target-epsilon if lower
    noise_bound: float  # what the noise allows over the noised count (the target, if it sets it)
    exact: float  # at the smallest partition's exact record count
    noise_multiplier: float  # at that count
    fewest: int
    most: int


def planned_epsilon(config: RunConfig, counts: Sequence[int]) -> PlannedEpsilon:
    """The worst client's epsilon in a run whose partitions hold ``counts`` records."""
    fewest, dp = min(counts), config.dp
    bound = dp.target_epsilon
    if dp.noise_multiplier:
        low = max(1, math.floor(fewest - COUNT_NOISE_SIGMAS * dp.record.count_noise))
        bound = run_epsilon(config, low)
    epsilon = min(bound, dp.target_epsilon) if dp.target_epsilon else bound
    noise = round_mechanism(config, fewest)[0]
    return PlannedEpsilon(epsilon, bound, run_epsilon(config, fewest), noise, fewest, max(counts))


def planned_epsilon_line(config: RunConfig, num_partitions: int | None, unknown: str = "") -> str:
    """The line a record-level DP run states at start: what each client spends, from the
    records of each of ``num_partitions`` partitions of ``data.name``; where there is no such
    count (None, with the reason in ``unknown``, or ``server.max-examples`` set), what it can.

    Raises
    ------
    ValueError
        When the data cannot be split into ``num_partitions``.
    """
    dp, train = config.dp, config.train
    if config.server.max_examples:
        num_partitions = None
        unknown = "nodes may train on their own data files (server.max-examples is set)"
    settings = f"batch {train.batch_size}, {train.local_steps} steps a round"
    over = f"(delta {dp.delta:g}) over {config.num_server_rounds} rounds if it trains in every one"
    declines = (
        f"; dp.target-epsilon {dp.target_epsilon:g} declines a round past it"
        if dp.target_epsilon
        else ""
    )
    if num_partitions is None:
        if not dp.noise_multiplier:
            return (
                f"record-level DP: each client spends at most epsilon {dp.target_epsilon:g} "
                f"{over}: dp.target-epsilon sets its noise from its noised record count "
                f"({settings}; the counts are unknown: {unknown})"
            )
        return (
            f"record-level DP: each client's epsilon {over} grows with its sampling rate, "
            f"{train.batch_size} / its noised record count, and the counts are unknown: "
            f"{unknown} (noise multiplier {dp.noise_multiplier:g}, {settings}){declines}"
        )
    plan = planned_epsilon(config, partition_record_counts(config, num_partitions))
    sizes = f"{plan.fewest}" if plan.fewest == plan.most else f"{plan.fewest}-{plan.most}"
    if not dp.noise_multiplier:
        return (
            f"record-level DP: each client spends at most epsilon {dp.target_epsilon:g} {over}: "
            f"dp.target-epsilon sets its noise from its noised record count (noise multiplier "
            f"{plan.noise_multiplier:.3g} at the smallest partition's {plan.fewest} records; "
            f"partitions of {sizes} records, {settings})"
        )
    exact = (
        f"{plan.exact:.3g} at the smallest partition's exact record count (partitions of "
        f"{sizes} records, noise multiplier {dp.noise_multiplier:g}, {settings}"
    )
    if plan.epsilon < plan.noise_bound:
        return (
            f"record-level DP: each client spends at most epsilon {dp.target_epsilon:g} {over}: "
            f"dp.target-epsilon declines a round past it, where the noise alone allows "
            f"{plan.noise_bound:.3g}; {exact})"
        )
    return (
        f"record-level DP: each client spends at most epsilon {plan.epsilon:.3g} {over}; "
        f"{exact}; the bound holds unless a noised count falls over {COUNT_NOISE_SIGMAS:g} std "
        f"(dp.record.count-noise {dp.record.count_noise:g}) below its records, p < 1e-9)"
    )
