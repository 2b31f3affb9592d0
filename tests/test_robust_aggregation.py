"""Robust aggregates of client deltas against their definitions, against poisoned deltas, and
the settings that cannot combine with them refused at start."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from federated.config import ConfigError, RobustSettings, parse_run_config
from federated.privacy.clipping import update_norm
from strategies.registry import STRATEGIES
from strategies.robust_aggregation import (
    ROBUST_AGGREGATES,
    coordinate_median,
    krum_choice,
    norm_bounded_mean,
    trimmed_mean,
)
from strategies.robust_strategy import RobustAggregation
from tests.test_client_dp import TINY, _dp_strategy, _uploads


def _deltas(n: int, seed: int, scale: float = 1.0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"a": torch.randn(6, 5, generator=g) * scale, "b": torch.randn(7, generator=g) * scale}
        for _ in range(n)
    ]


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=9), st.integers(min_value=0, max_value=10_000))
def test_the_median_is_the_middle_value_of_every_coordinate(n: int, seed: int) -> None:
    deltas = _deltas(n, seed)
    median = coordinate_median(deltas)
    for key in ("a", "b"):
        stack = torch.stack([d[key] for d in deltas]).double()
        ordered = stack.sort(dim=0).values
        middle = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2  # even n: the two middles' mean
        torch.testing.assert_close(median[key].double(), middle, rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=3, max_value=12), st.sampled_from([0.0, 0.1, 0.2, 0.34]))
def test_the_trimmed_mean_drops_the_extremes_of_every_coordinate(n: int, fraction: float) -> None:
    deltas = _deltas(n, seed=n)
    cut = int(fraction * n)
    trimmed = trimmed_mean(deltas, fraction)
    for key in ("a", "b"):
        ordered = torch.stack([d[key] for d in deltas]).double().sort(dim=0).values
        kept = ordered[cut : n - cut]
        torch.testing.assert_close(trimmed[key].double(), kept.mean(0), rtol=1e-5, atol=1e-6)


def test_norm_bounding_clips_each_delta_then_averages_by_weight() -> None:
    deltas = _deltas(5, 1)
    deltas[0] = {k: v * 1000 for k, v in deltas[0].items()}
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    bound = 0.5
    mean = norm_bounded_mean(deltas, weights, bound)
    clipped = [{k: v * min(1.0, bound / update_norm(d)) for k, v in d.items()} for d in deltas]
    for key in mean:
        expected = sum(w * c[key] for w, c in zip(weights, clipped, strict=True)) / sum(weights)
        torch.testing.assert_close(mean[key], expected.float(), rtol=1e-5, atol=1e-7)
    median_norm = sorted(update_norm(d) for d in deltas)[2]
    auto = norm_bounded_mean(deltas, weights, 0.0)  # 0: the round's median norm
    assert update_norm(auto) <= median_norm + 1e-6


def test_krum_keeps_the_honest_clients_and_drops_the_far_ones() -> None:
    honest, attackers = _deltas(7, 2, scale=0.1), _deltas(2, 3, scale=50.0)
    deltas = honest + attackers
    assert krum_choice(deltas, byzantine=2, keep=1)[0] < 7
    assert sorted(krum_choice(deltas, byzantine=2, keep=7)) == list(range(7))


POISONS = {
    "scaled by 100": lambda d: {k: v * 100 for k, v in d.items()},
    "sign flipped": lambda d: {k: -v * 3 for k, v in d.items()},
}


@pytest.mark.parametrize("poison", sorted(POISONS))
@pytest.mark.parametrize("method", sorted(ROBUST_AGGREGATES))
def test_a_poisoned_delta_moves_the_robust_aggregate_little(poison: str, method: str) -> None:
    """Nine honest clients agree up to noise; one poisons: the robust aggregate stays near the
    honest mean, where the plain mean does not."""
    g = torch.Generator().manual_seed(0)
    direction = {"a": torch.randn(6, 5, generator=g), "b": torch.randn(7, generator=g)}
    honest = [
        {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in direction.items()}
        for _ in range(9)
    ]
    deltas = honest + [POISONS[poison](honest[0])]
    weights = [1.0] * 10
    settings_ = RobustSettings(method=method, byzantine_clients=1, trim_fraction=0.2)
    robust = ROBUST_AGGREGATES[method](deltas, weights, settings_)
    honest_mean = {k: sum(d[k] for d in honest) / 9 for k in direction}
    plain = {k: sum(d[k] for d in deltas) / 10 for k in direction}

    def error(agg: dict) -> float:
        return update_norm({k: agg[k] - honest_mean[k] for k in agg})

    # Norm bounding limits how far one client pulls, not which way: a flipped delta at the
    # median norm still pulls the mean back by one client's share.
    factor = 0.6 if method == "norm-bound" else 0.25
    assert error(robust) < factor * error(plain)


@pytest.mark.parametrize("name", sorted(n for n, c in STRATEGIES.items() if c.linear))
def test_an_unbounded_norm_bound_is_the_strategy_s_own_mean(name: str) -> None:
    raw = {"robust.method": "norm-bound", "robust.norm-bound": 1e9}
    plain, robust = (
        _dp_strategy(name, **{"dp.mode": "none"}),
        _dp_strategy(name, **{"dp.mode": "none"}, **raw),
    )
    assert isinstance(robust, RobustAggregation) and not isinstance(plain, RobustAggregation)
    uploads = _uploads(plain, 4)
    weights = [1.0, 2.0, 3.0, 4.0]
    plain.aggregate(uploads, weights)
    robust.aggregate(uploads, weights)
    for key, value in plain.model.trainable.items():
        torch.testing.assert_close(robust.model.trainable[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"strategy.name": "flexlora"}, "it replaces a mean of client deltas"),
        ({"dp.mode": "client", "dp.noise-multiplier": 1.0}, "client-level DP"),
        ({"secagg.enabled": True}, "secure aggregation gives the server only the sum"),
    ],
)
def test_robust_aggregation_is_refused_where_it_cannot_apply(extra: dict, message: str) -> None:
    from federated.model.workspace import lora_model
    from federated.protocol.global_model import GlobalModel
    from strategies.registry import build_strategy

    config = parse_run_config({**TINY, "robust.method": "median", **extra})
    with pytest.raises(ConfigError, match=message):
        build_strategy(config, GlobalModel(dict(lora_model(config).initial)))
