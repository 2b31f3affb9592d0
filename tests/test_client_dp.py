"""Client-level DP on the server: clipping, noise, adaptive bound, accounting, linear only."""

from __future__ import annotations

import math

import pytest
import torch

from federated.config import ConfigError, parse_run_config
from federated.privacy.accounting import PrivacyLedger
from federated.privacy.clipping import clip_update, update_norm
from federated.workspace import lora_model
from strategies.client_dp import ClientLevelDp
from strategies.fedkseed import FedKSeed
from strategies.lora_strategy import GlobalModel
from strategies.registry import STRATEGIES, build_strategy

TINY = {"model.name": "tiny-bert", "data.name": "wordnet", "data.num-classes": 4, "lora.rank": 4}
DP = {"dp.client-level": True, "dp.client-noise-multiplier": 1.0}


def _deltas(n: int, scale: float, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"a": torch.randn(40, 30, generator=g) * scale, "b": torch.randn(50, generator=g) * scale}
        for _ in range(n)
    ]


def test_clipping_bounds_each_update_and_keeps_its_direction() -> None:
    big, small = _deltas(1, 10.0)[0], _deltas(1, 1e-4, seed=1)[0]
    clipped = clip_update(big, 0.5)
    assert update_norm(clipped) == pytest.approx(0.5, rel=1e-5)
    ratio = clipped["a"] / big["a"]
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.flatten()[0])))
    assert all(torch.equal(clip_update(small, 0.5)[k], small[k]) for k in small)


def _mechanism(noise: float, bound: float, seed: int) -> ClientLevelDp:
    raw = {**TINY, **DP, "dp.client-noise-multiplier": noise, "dp.client-clip-norm": bound}
    dp = ClientLevelDp(parse_run_config(raw).dp, 0.25, 10, clients_per_round=5)
    dp.generator = torch.Generator().manual_seed(seed)
    return dp


def test_the_private_mean_is_the_mean_of_clipped_updates_plus_sigma_s_over_m() -> None:
    deltas, bound, sigma = _deltas(5, 1.0), 0.8, 2.0
    clean = _mechanism(1e-12, bound, 0).aggregate(deltas)
    expected = {k: sum(clip_update(d, bound)[k] for d in deltas) / 5 for k in deltas[0]}
    for key in clean:
        torch.testing.assert_close(clean[key], expected[key])
    noisy = _mechanism(sigma, bound, 1).aggregate(deltas)
    noise = torch.cat([(noisy[k] - clean[k]).flatten() for k in clean])
    assert float(noise.std()) == pytest.approx(sigma * bound / 5, rel=0.05)


def _dp_strategy(name: str, **extra):
    raw = {**TINY, **DP, "strategy.name": name, **extra}
    if name == "fedkseed":
        raw |= {"mode": "zo", "zo.pool-size": 32}
        config = parse_run_config(raw)
        return build_strategy(config, FedKSeed.initial_model(32))
    config = parse_run_config(raw)
    return build_strategy(config, GlobalModel(dict(lora_model(config).initial)))


def _uploads(strategy, n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    if strategy.reply_kind == "seed-steps":
        return [
            {"seed-indices": torch.randint(0, 32, (6,), generator=g),
             "seed-scalars": torch.randn(6, generator=g)}
            for _ in range(n)
        ]  # fmt: skip
    reference = strategy.reply_reference()
    return [{k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in reference.items()}
            for _ in range(n)]  # fmt: skip


@pytest.mark.parametrize("name", sorted(n for n, c in STRATEGIES.items() if c.linear))
def test_a_linear_strategy_is_its_model_moved_by_the_mean_client_delta(name: str) -> None:
    by_deltas, by_aggregate = _dp_strategy(name), _dp_strategy(name)
    uploads = _uploads(by_deltas, 4)
    deltas = [by_deltas.client_delta(u) for u in uploads]
    by_deltas.apply_mean_delta({k: sum(d[k] for d in deltas) / len(deltas) for k in deltas[0]})
    via_deltas = by_deltas.model.trainable
    by_aggregate.aggregate(uploads, [1.0] * len(uploads))
    assert by_aggregate.model.trainable.keys() == via_deltas.keys()
    for key, value in by_aggregate.model.trainable.items():
        torch.testing.assert_close(via_deltas[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(n for n, c in STRATEGIES.items() if not c.linear))
def test_non_linear_strategies_are_refused_at_start(name: str) -> None:
    with pytest.raises(ConfigError, match=f"strategy '{name}': client-level DP adds noise"):
        _dp_strategy(name)


def test_adaptive_clipping_refuses_a_count_noise_too_small_to_share_the_budget() -> None:
    raw = {**TINY, **DP, "dp.client-adaptive-clip": True, "dp.client-count-noise": 0.4}
    with pytest.raises(ConfigError, match="above half the client noise multiplier"):
        ClientLevelDp(parse_run_config(raw).dp, 0.25, 10, clients_per_round=5)


def test_client_level_dp_needs_a_noise_and_rules_out_fedkseed_pro() -> None:
    with pytest.raises(ConfigError, match="dp.client-noise-multiplier, or dp.client-target"):
        parse_run_config({**TINY, "dp.client-level": True})
    raw = {**TINY, **DP, "mode": "zo", "strategy.name": "fedkseed", "zo.pro": True}
    with pytest.raises(ConfigError, match="FedKSeed-Pro weighs seeds"):
        parse_run_config(raw)


def test_each_round_is_one_sampled_gaussian_event_and_the_budget_stops_the_next() -> None:
    config = parse_run_config({**TINY, **DP, "dp.client-target-epsilon": 8.0})
    dp = ClientLevelDp(config.dp, 0.25, 10, clients_per_round=5)
    dp.sample_rate = 0.25
    rounds = 0
    while dp.budget_allows(0.25):
        dp.aggregate(_deltas(5, 1.0, seed=rounds))
        rounds += 1
    reference = PrivacyLedger()
    reference.spend(1.0, 0.25, rounds)
    assert rounds > 1 and dp.last is not None
    assert dp.last.epsilon == pytest.approx(reference.epsilon(1e-5))
    assert dp.last.epsilon <= 8.0 < dp.epsilon_after_round(0.25)


def test_a_target_epsilon_alone_sets_the_noise_for_every_round() -> None:
    raw = {**TINY, "dp.client-level": True, "dp.client-target-epsilon": 3.0}
    dp = ClientLevelDp(parse_run_config(raw).dp, 0.25, 8, clients_per_round=5)
    for seed in range(8):
        dp.aggregate(_deltas(5, 1.0, seed=seed))
    assert 3.0 - 0.05 <= dp.last.epsilon <= 3.0


def test_adaptive_clipping_moves_the_bound_towards_the_median_norm() -> None:
    raw = {**TINY, **DP, "dp.client-adaptive-clip": True, "dp.client-clip-norm": 0.1,
           "dp.client-count-noise": 0.6, "dp.client-noise-multiplier": 1.0}  # fmt: skip
    dp = ClientLevelDp(parse_run_config(raw).dp, 0.25, 100, clients_per_round=10)
    # split_noise: the update gets less privacy budget than a lone mechanism would need.
    assert dp.update_noise == pytest.approx((1.0**-2 - 1.2**-2) ** -0.5)
    norms = []
    for seed in range(60):
        deltas = _deltas(10, 1.0, seed=seed)
        norms += [update_norm(d) for d in deltas]
        dp.aggregate(deltas)
    median = sorted(norms)[len(norms) // 2]
    assert abs(math.log(dp.bound / median)) < 0.3  # started 300 times too small
