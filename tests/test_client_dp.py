"""Client-level DP on the server: clipping, noise, a fixed denominator, adaptive bound,
accounting, linear strategies only."""

from __future__ import annotations

import math

import pytest
import torch

from federated.config import ConfigError, parse_run_config
from federated.model.workspace import lora_model
from federated.privacy.accounting import PrivacyLedger
from federated.privacy.clipping import clip_update, update_norm
from federated.protocol.global_model import GlobalModel, zo_initial_model
from strategies.client_dp import ClientLevelDp
from strategies.registry import STRATEGIES, build_strategy

TINY = {"model.name": "tiny-bert", "data.name": "wordnet", "data.num-classes": 4, "lora.rank": 4}
DP = {"dp.mode": "client", "dp.noise-multiplier": 1.0}
ZERO = {"a": torch.zeros(40, 30), "b": torch.zeros(50)}


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


def _mechanism(
    noise: float, bound: float, seed: int, *, rate: float = 0.25, population: int = 20, **extra
) -> ClientLevelDp:
    raw = {**TINY, **DP, "dp.noise-multiplier": noise, "dp.client.clip-norm": bound}
    dp = ClientLevelDp(parse_run_config({**raw, **extra}).dp, rate, 10, expected_clients=5)
    dp.generator = torch.Generator().manual_seed(seed)
    dp.population = population
    return dp


def test_the_private_mean_is_the_clipped_sum_over_the_expected_count_plus_noise() -> None:
    deltas, bound, sigma = _deltas(5, 1.0), 0.8, 2.0
    expected = 0.25 * 20  # q·N, not the 5 that replied
    clean = _mechanism(1e-12, bound, 0).aggregate(deltas, ZERO)
    reference = {k: sum(clip_update(d, bound)[k] for d in deltas) / expected for k in ZERO}
    for key in clean:
        torch.testing.assert_close(clean[key], reference[key].double())
    noisy = _mechanism(sigma, bound, 1).aggregate(deltas, ZERO)
    noise = torch.cat([(noisy[k] - clean[k]).flatten() for k in clean])
    assert float(noise.std()) == pytest.approx(sigma * bound / expected, rel=0.05)


def test_a_missing_reply_changes_the_sum_not_the_denominator() -> None:
    deltas, bound = _deltas(4, 1.0), 0.5
    all_four = _mechanism(1e-12, bound, 0).aggregate(deltas, ZERO)
    three = _mechanism(1e-12, bound, 0).aggregate(deltas[:3], ZERO)
    dropped = clip_update(deltas[3], bound)
    for key in ZERO:  # exactly one client's clipped update over q·N: nothing else moved
        torch.testing.assert_close(all_four[key] - three[key], dropped[key].double() / 5.0)


def test_an_empty_draw_releases_the_noise_and_is_accounted() -> None:
    dp = _mechanism(2.0, 0.5, 3)
    mean = dp.aggregate([], ZERO)
    values = torch.cat([v.flatten() for v in mean.values()])
    assert float(values.std()) == pytest.approx(2.0 * 0.5 / 5.0, rel=0.06)
    assert dp.ledger.events == [(2.0, 0.25, 1)]


def _dp_strategy(name: str, **extra):
    raw = {**TINY, **DP, "strategy.name": name, **extra}
    if name == "fedkseed":
        raw |= {"mode": "zo", "zo.pool-size": 32}
        config = parse_run_config(raw)
        return build_strategy(config, zo_initial_model(32))
    config = parse_run_config(raw)
    return build_strategy(config, GlobalModel(dict(lora_model(config).initial)))


def _uploads(strategy, n: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    if strategy.reply_kind == "seed-steps":
        return [
            {
                "seed-indices": torch.randint(0, 32, (6,), generator=g),
                "seed-scalars": torch.randn(6, generator=g),
            }
            for _ in range(n)
        ]
    reference = strategy.reply_reference()
    return [
        {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in reference.items()}
        for _ in range(n)
    ]


@pytest.mark.parametrize("name", sorted(n for n, c in STRATEGIES.items() if c.linear))
def test_a_linear_strategy_is_its_model_moved_by_the_mean_client_delta(name: str) -> None:
    # The strategy client-level DP wraps: its own aggregate against its deltas' mean.
    plain = {"dp.mode": "none"}
    by_deltas, by_aggregate = _dp_strategy(name, **plain), _dp_strategy(name, **plain)
    uploads = _uploads(by_deltas, 4)
    deltas = [by_deltas.client_delta(u) for u in uploads]
    assert deltas[0].keys() == by_deltas.zero_delta().keys()
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
    raw = {**TINY, **DP, "dp.client.adaptive-clip": True, "dp.client.count-noise": 0.4}
    with pytest.raises(ConfigError, match="above half the client noise multiplier"):
        ClientLevelDp(parse_run_config(raw).dp, 0.25, 10, expected_clients=5)


def test_client_level_dp_needs_a_noise_and_rules_out_fedkseed_pro() -> None:
    needs = "^run config 'dp.mode' = 'client' needs a noise: set dp.noise-multiplier, or dp.target"
    with pytest.raises(ConfigError, match=needs):
        parse_run_config({**TINY, "dp.mode": "client"})
    raw = {**TINY, **DP, "mode": "zo", "strategy.name": "fedkseed", "zo.pro": True}
    with pytest.raises(ConfigError, match="FedKSeed-Pro weighs seeds"):
        parse_run_config(raw)


def test_a_target_below_what_the_accountant_certifies_is_refused_in_one_line() -> None:
    floor = PrivacyLedger().epsilon_floor(1e-5)
    assert 0.05 < floor < 0.2  # opacus's largest order, 63, bounds it near 0.1 at delta 1e-5
    raw = {**TINY, "dp.mode": "client", "dp.target-epsilon": floor * 0.9}
    with pytest.raises(ConfigError, match=r"^run config 'dp.target-epsilon' = .*below"):
        parse_run_config(raw)


def test_each_round_is_one_sampled_gaussian_event_and_the_budget_stops_the_next() -> None:
    config = parse_run_config({**TINY, **DP, "dp.target-epsilon": 8.0})
    dp = ClientLevelDp(config.dp, 0.25, 10, expected_clients=5)
    dp.population = 20
    rounds = 0
    while dp.budget_allows():
        dp.aggregate(_deltas(5, 1.0, seed=rounds), ZERO)
        rounds += 1
    reference = PrivacyLedger()
    reference.spend(1.0, 0.25, rounds)
    assert rounds > 1 and dp.report() is not None
    assert dp.report().epsilon == pytest.approx(reference.epsilon(1e-5))
    assert dp.report().epsilon <= 8.0 < dp.epsilon_after_round()


def test_a_target_epsilon_alone_sets_the_noise_for_every_round() -> None:
    raw = {**TINY, "dp.mode": "client", "dp.target-epsilon": 3.0}
    dp = ClientLevelDp(parse_run_config(raw).dp, 0.25, 8, expected_clients=5)
    dp.population = 20
    for seed in range(8):
        dp.aggregate(_deltas(5, 1.0, seed=seed), ZERO)
    assert 3.0 - 0.05 <= dp.report().epsilon <= 3.0


ADAPTIVE = {"dp.client.adaptive-clip": True, "dp.client.clip-quantile": 0.5}


def test_adaptive_clipping_moves_the_bound_towards_the_median_norm() -> None:
    dp = _mechanism(1.0, 0.1, 0, rate=0.5, **ADAPTIVE, **{"dp.client.count-noise": 0.6})
    # split_noise: the update gets less privacy budget than a lone mechanism would need.
    assert dp.update_noise == pytest.approx((1.0**-2 - 1.2**-2) ** -0.5)
    norms = []
    for seed in range(60):
        deltas = _deltas(10, 1.0, seed=seed)  # q·N = 10: the expected count replied
        norms += [update_norm(d) for d in deltas]
        dp.aggregate(deltas, ZERO)
    median = sorted(norms)[len(norms) // 2]
    assert abs(math.log(dp.bound / median)) < 0.3  # started 300 times too small


def _released_fraction(dp: ClientLevelDp, start: float, deltas: list) -> float:
    """The unclipped share the mechanism used, read back from the bound it released."""
    dp.bound = start
    dp.aggregate(deltas, {"a": torch.zeros(1)})
    quantile, lr = dp.dp.client.clip_quantile, dp.dp.client.clip_lr
    return quantile - math.log(dp.bound / start) / lr


def _one_client(norm: float) -> dict[str, torch.Tensor]:
    return {"a": torch.tensor([norm])}


@pytest.mark.parametrize(
    ("sigma", "count_noise", "rate", "rounds"),
    [(0.9, 0.5, 0.1, 100), (0.9, 1.5, 0.5, 20), (2.0, 1.2, 0.1, 300), (2.0, 3.0, 0.02, 1000)],
)
def test_the_ledger_is_the_composition_of_the_mechanisms_as_released(
    sigma: float, count_noise: float, rate: float, rounds: int
) -> None:
    """Measure what adaptive clipping releases, from the outside: the update's and the count's
    noise and what one client can change in each; compose those two Gaussian mechanisms at the
    sampling rate; compare with what the ledger reports."""
    settings = {**ADAPTIVE, "dp.client.count-noise": count_noise}
    expected, bound = rate * 20, 1.0

    # What one client changes in the released count: remove one inside and one outside the bound.
    base = [_one_client(0.5), _one_client(3.0), _one_client(0.2)]
    shares = {}
    for name, deltas in {"all": base, "no inside": base[1:], "no outside": base[::2]}.items():
        shares[name] = _released_fraction(
            _mechanism(sigma, bound, 7, rate=rate, **settings), bound, deltas
        )
    count_sensitivity = expected * max(abs(shares["all"] - shares[k]) for k in shares)

    # The count's noise: its spread over secret draws.
    dp = _mechanism(sigma, bound, 11, rate=rate, **settings)
    draws = torch.tensor([_released_fraction(dp, bound, base) for _ in range(3000)])
    count_std = float(draws.std()) * expected

    # The update: what one client moves and the noise on the sum, in multiples of the bound.
    zeros = {"a": torch.zeros(20_000)}
    with_one = _mechanism(sigma, bound, 5, rate=rate, **settings).aggregate(
        [{"a": torch.full((20_000,), 1.0)}], zeros
    )
    without = _mechanism(sigma, bound, 5, rate=rate, **settings).aggregate([], zeros)
    update_sensitivity = float((with_one["a"] - without["a"]).norm()) * expected
    update_std = float(without["a"].std()) * expected

    effective = (
        (update_std / update_sensitivity) ** -2 + (count_std / count_sensitivity) ** -2
    ) ** -0.5
    independent = PrivacyLedger()
    independent.spend(effective, rate, rounds)

    ledger = _mechanism(sigma, bound, 0, rate=rate, **settings)
    for _ in range(rounds):
        ledger.aggregate([], {"a": torch.zeros(1)})
    assert update_sensitivity == pytest.approx(bound, rel=1e-6)
    assert count_sensitivity == pytest.approx(0.5, rel=1e-6)
    assert ledger.report().epsilon == pytest.approx(independent.epsilon(1e-5), rel=0.06)


def test_only_the_noised_share_of_unclipped_clients_is_recorded() -> None:
    dp = _mechanism(1.0, 1.0, 4, **ADAPTIVE, **{"dp.client.count-noise": 2.0})
    deltas = [_one_client(0.5)] * 3 + [_one_client(5.0)]  # 3 of 4 inside: exactly 0.75
    released = _released_fraction(dp, 1.0, deltas)
    report = vars(dp.report())
    assert report["noised_unclipped_fraction"] == pytest.approx(released)
    assert abs(released - 0.75) > 1e-3  # the noise is in it
    assert 0.75 not in report.values() and "clipped_fraction" not in report


def test_clients_are_poisson_sampled_independently_at_the_accounted_rate() -> None:
    dp = _mechanism(1.0, 1.0, 0, rate=0.3)
    dp.generator = torch.Generator().manual_seed(1)
    nodes, draws = list(range(100, 120)), 4000
    chosen = torch.zeros(draws, len(nodes))
    for i in range(draws):
        for node in dp.sample(nodes):
            chosen[i, node - 100] = 1.0
    assert dp.population == len(nodes)
    q, n = 0.3, len(nodes)
    frequency = chosen.mean(0)  # each node at q, within 4.5 standard errors
    assert (frequency - q).abs().max() < 4.5 * math.sqrt(q * (1 - q) / draws)
    together = (chosen.T @ chosen) / draws  # independence: pairs together at q²
    off_diagonal = together[~torch.eye(n, dtype=torch.bool)]
    assert (off_diagonal - q * q).abs().max() < 4.5 * math.sqrt(q * q * (1 - q * q) / draws)
    sizes = chosen.sum(1)  # the size varies as a binomial's, down to empty draws
    assert float(sizes.var()) == pytest.approx(n * q * (1 - q), rel=0.1)


def test_the_draw_is_secret_the_same_seed_twice_samples_differently() -> None:
    raw = {**TINY, **DP, "seed": 3}
    config = parse_run_config(raw)
    first, second = (ClientLevelDp(config.dp, 0.5, 10, expected_clients=5) for _ in range(2))
    nodes = list(range(40))
    assert [first.sample(nodes) for _ in range(3)] != [second.sample(nodes) for _ in range(3)]
