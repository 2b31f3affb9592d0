"""Distributed DP's mechanism: discrete Gaussian draws, conditional rounding, the accounting and
the plan, and the integer vectors through SecAgg+'s masking to the noised sum."""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from opacus.accountants.analysis import rdp as rdp_analysis

from client import secure_aggregation
from federated.config import ConfigError, parse_run_config
from federated.config.schema import default_flat_config
from federated.model.workspace import lora_model
from federated.privacy.discrete_gaussian import discrete_gaussian
from federated.privacy.distributed_noise import (
    HALF_FIELD,
    ORDERS,
    TAIL_STDS,
    discrete_gaussian_rdp,
    plan_distributed,
    rounded_bound,
    subsampled_rdp,
)
from federated.protocol import message_keys as keys
from federated.protocol.global_model import GlobalModel
from federated.protocol.reply_contract import MASKED, train_metric_keys
from federated.secagg import protocol as p
from federated.secagg.distributed_dp import conditional_round, decode_sum, noised_vector
from federated.secagg.keys import new_key_pair, new_signing_pair
from federated.secagg.masking import mask, sum_masked, unmask
from strategies.distributed_dp import update_dimension
from strategies.distributed_dp_strategy import DistributedDpStrategy
from strategies.registry import build_strategy
from tests.messages import message


def test_discrete_gaussian_has_the_variance_and_mass_of_its_definition() -> None:
    rng = np.random.default_rng(0)
    for sigma in (3.0, 1e4, 2e7):
        draws = discrete_gaussian(200_000, sigma, rng)
        # The variance of a discrete Gaussian of parameter σ ≥ 1 is σ² to within 1e-30.
        assert draws.var() == pytest.approx(sigma**2, rel=0.015)  # 5 standard errors
        assert abs(draws.mean()) < 5 * sigma / math.sqrt(draws.size)
    sigma, n = 1.5, 400_000
    draws = discrete_gaussian(n, sigma, rng)
    support = np.arange(-8, 9)
    mass = np.exp(-(support**2) / (2 * sigma**2))
    mass /= mass.sum()
    counts = np.array([(draws == x).sum() for x in support])
    assert counts.sum() == n  # nothing beyond 8 (mass below 1e-6 there)
    chi2 = float((((counts - n * mass) ** 2) / (n * mass)).sum())
    assert chi2 < 45  # 16 degrees of freedom: p < 3e-4 above 45


def test_the_subsampling_bound_holds_over_the_exact_sampled_gaussian() -> None:
    for rate, multiplier in [(0.01, 1.2), (0.1, 0.8), (0.25, 1.0), (0.5, 2.0)]:
        exact = rdp_analysis.compute_rdp(
            q=rate, noise_multiplier=multiplier, steps=1, orders=list(ORDERS)
        )
        bound = [subsampled_rdp(a, rate, lambda o, m=multiplier: o / (2 * m**2)) for a in ORDERS]
        assert np.all(np.array(bound) >= exact * (1 - 1e-9))
        assert bound[0] < 0.6 * ORDERS[0] / (2 * multiplier**2)  # and it does amplify
    gaussian = lambda o: o / 2.0  # noqa: E731
    assert [subsampled_rdp(a, 1.0, gaussian) for a in ORDERS] == [gaussian(a) for a in ORDERS]


def test_the_discrete_gaussian_rdp_is_the_gaussians_when_its_sum_is_exact() -> None:
    assert discrete_gaussian_rdp(8, 0.5, 0.0, 1000) == pytest.approx(8 * 0.25 / 2)
    assert discrete_gaussian_rdp(8, 0.5, 1e-3, 1000) > 8 * 0.25 / 2


def test_conditional_rounding_stays_within_the_bound_on_neighbouring_integers() -> None:
    rng = np.random.default_rng(1)
    dimension, clip = 5000, 30.0
    for _ in range(20):
        scaled = rng.normal(size=dimension)
        scaled *= clip / np.linalg.norm(scaled)
        rounded = conditional_round(scaled, rounded_bound(clip, dimension), rng)
        assert np.linalg.norm(rounded) <= rounded_bound(clip, dimension)
        assert np.all((rounded == np.floor(scaled)) | (rounded == np.ceil(scaled)))


def test_the_plan_meets_its_budget_tightly_and_cannot_wrap() -> None:
    args = dict(clip=0.5, dimension=76_800, sample_rate=0.25, min_clients=4, max_clients=40)
    plan = plan_distributed(**args, delta=1e-5, target_epsilon=3.0, rounds=8)
    assert plan.epsilon(8) <= 3.0
    looser = plan_distributed(**args, delta=1e-5, noise_multiplier=0.98 * plan.noise_multiplier)
    assert looser.epsilon(8) > 3.0
    # The summed noise at the fewest clients is the multiplier times the sensitivity.
    summed_std = plan.local_std * math.sqrt(plan.min_clients)
    assert summed_std == pytest.approx(plan.noise_multiplier * plan.bound)
    largest = plan.max_clients * plan.bound + TAIL_STDS * plan.local_std * math.sqrt(40)
    assert largest <= HALF_FIELD


def test_the_unmasked_sum_is_the_plain_sum_plus_noise_of_the_planned_variance() -> None:
    clients, dimension, clip = 5, 20_000, 1.0
    plan = plan_distributed(
        clip, dimension, 1.0, min_clients=4, max_clients=10, delta=1e-5, noise_multiplier=1.0
    )
    rng = np.random.default_rng(2)
    updates = [{"w": torch.from_numpy(rng.normal(size=dimension))} for _ in range(clients)]
    seeds = [os.urandom(32) for _ in range(clients)]
    pair = {(u, v): os.urandom(32) for u in range(clients) for v in range(u + 1, clients)}

    def keys_of(me: int) -> dict[int, bytes]:
        return {v: pair[min(me, v), max(me, v)] for v in range(clients) if v != me}

    masked = [
        mask(noised_vector(u, plan, rng), seeds[i], keys_of(i), i) for i, u in enumerate(updates)
    ]
    total = unmask(sum_masked(masked, dimension + 1), seeds, [])
    count, sums = decode_sum(total, [("w", (dimension,))], plan)
    assert count == clients
    plain = sum(u["w"] * min(1.0, clip / float(u["w"].norm())) for u in updates)
    residual = ((sums["w"] - plain) / plan.granularity).numpy()
    expected_var = clients * plan.local_std**2  # rounding adds at most clients/4: negligible
    assert residual.var() == pytest.approx(expected_var, rel=0.05)  # 3.5 standard errors
    assert abs(residual.mean()) < 5 * math.sqrt(expected_var / dimension)
    # At the planned count the summed noise is the multiplier times the sensitivity, in units.
    assert (4 * plan.local_std**2) == pytest.approx((plan.noise_multiplier * plan.bound) ** 2)


DISTRIBUTED = {
    "model.name": "tiny-bert",
    "data.name": "wordnet",
    "data.num-classes": 4,
    "lora.rank": 4,
    "dp.mode": "distributed",
    "secagg.enabled": True,
    "dp.target-epsilon": 3.0,
    "strategy.fraction-train": 0.25,
    "strategy.min-available-nodes": 20,
    "num-server-rounds": 6,
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"secagg.enabled": False}, "set secagg.enabled"),
        ({"secagg.num-shares": 0.5}, "set secagg.num-shares = 1.0"),
        ({"dp.client.adaptive-clip": True}, "turn adaptive clipping off"),
    ],
)
def test_distributed_dp_without_what_it_needs_is_refused_in_one_line(change, reason) -> None:
    with pytest.raises(ConfigError, match=rf"^run config 'dp.mode' = 'distributed'.*{reason}"):
        parse_run_config({**DISTRIBUTED, **change})


def test_the_server_adds_no_noise_and_counts_every_round_until_the_budget() -> None:
    config = parse_run_config(DISTRIBUTED)
    strategy = build_strategy(config, GlobalModel(dict(lora_model(config).initial)))
    assert isinstance(strategy, DistributedDpStrategy)
    dp = strategy.mechanism
    assert dp.plan.dimension == update_dimension(strategy, config)
    assert dp.plan.min_clients == 4  # 0.25 of 20 nodes, of whom 20% may drop out
    dp.population = 20
    total = {"w": torch.randn(7, dtype=torch.float64)}
    dp.spend_round(1)  # before the shares that unmask round 1 are asked for
    torch.testing.assert_close(dp.from_sum(total, None)["w"], total["w"] / 5)
    dp.spend_round(1)  # its failure path counting it again changes nothing
    dp.spend_round(2)  # a round without a sum still counts
    report = dp.report()
    assert report.epsilon == pytest.approx(dp.plan.epsilon(2))
    # Against the server, which knows whom it sampled: no amplification.
    assert report.epsilon_against_server == pytest.approx(dp.plan.epsilon(2, sample_rate=1.0))
    assert report.epsilon_against_server > 2 * report.epsilon
    server_round = 2
    while dp.budget_allows():
        server_round += 1
        dp.spend_round(server_round)
    assert dp.rounds == 6 and dp.report().epsilon <= 3.0 < dp.epsilon_after_round()
    resumed = build_strategy(config, GlobalModel(dict(lora_model(config).initial))).mechanism
    resumed.restore(dp.state())
    assert resumed.rounds == 6 and not resumed.budget_allows()


def _node(me: int) -> Context:
    run = {**default_flat_config(), **DISTRIBUTED}
    return Context(1, me, {"partition-id": 0, "num-partitions": 20}, RecordDict(), run)


def _stage(action: str, values: dict, me: int, round_id: str) -> Message:
    content = RecordDict({p.CONFIG: ConfigRecord(values)})
    return message(content, dst=me, message_type=f"train.{action}", group_id=round_id)


def test_a_client_takes_no_part_in_a_sum_of_fewer_clients_than_its_noise_was_sized_for() -> None:
    me, context = 1, _node(1)
    keys_of = {n: [new_key_pair()[1], new_key_pair()[1], new_signing_pair()[1]] for n in range(6)}

    def share(group: list[int], round_id: str) -> str:
        """Start round ``round_id`` and offer this group: the refusal, or '' when taken."""
        assert not secure_aggregation.setup(_stage(p.SETUP, {}, me, round_id), context).has_error()
        values = {
            p.NODES: group,
            p.PK_MASKS: [keys_of[n][0] for n in group],
            p.PK_ENCRYPTS: [keys_of[n][1] for n in group],
            p.PK_SIGNS: [keys_of[n][2] for n in group],
            p.THRESHOLD: 4,
        }
        reply = secure_aggregation.share_keys(_stage(p.SHARE_KEYS, values, me, round_id), context)
        return reply.error.reason if reply.has_error() else ""

    assert re.search("3 clients in the sharing group: .* fewer than 4", share([1, 2, 3], "1"))
    assert "name a node twice" in share([1, 2, 2, 3, 4], "2")
    assert share([1, 2, 3, 4, 5], "3") == ""
    collect = _stage(p.COLLECT, {p.SOURCES: [], p.CIPHERTEXTS: []}, me, "3")
    reply = secure_aggregation.collect_with(lambda m, c: m, lambda m, c: m)(collect, context)
    assert reply.has_error() and "1 of the group shared; unmasking needs 4" in reply.error.reason


def test_a_distributed_client_sends_no_exact_function_of_its_data_beside_its_vector() -> None:
    run = parse_run_config(DISTRIBUTED)
    sent = MetricRecord(
        {
            keys.NUM_EXAMPLES: 117.0,
            keys.PARTITION_ID: 3.0,
            keys.TRAIN_STEPS: 5.0,
            keys.LORA_RANK: 4.0,
            keys.TRAIN_LOSS: 1.23,
            keys.TRAIN_SECONDS: 9.0,
            keys.PEAK_MEMORY_MB: 800.0,
        }
    )
    released = secure_aggregation._released_metrics(sent, run)
    assert dict(released) == {keys.PARTITION_ID: 3.0, keys.LORA_RANK: 4.0}
    assert set(released) == train_metric_keys("lora", MASKED)
