"""Strategies by name: options from the run config, mixed ranks refused or served, linearity."""

from __future__ import annotations

import pytest

from federated.config import ConfigError, parse_run_config
from federated.model.workspace import lora_model
from strategies.fedkseed import FedKSeed
from strategies.global_model import GlobalModel
from strategies.registry import STRATEGIES, build_strategy

TINY = {"model.name": "tiny-bert", "data.name": "wordnet", "data.num-classes": 4, "lora.rank": 4}


def _initial(config) -> GlobalModel:
    return GlobalModel(dict(lora_model(config).initial))


LORA_STRATEGIES = sorted(n for n, c in STRATEGIES.items() if c.reply_kind == "tensors")


def test_every_lora_strategy_builds_from_its_config() -> None:
    for name in LORA_STRATEGIES:
        config = parse_run_config({**TINY, "strategy.name": name})
        strategy = build_strategy(config, _initial(config))
        assert isinstance(strategy, STRATEGIES[name])
        assert strategy.scale == pytest.approx(config.lora.alpha / config.lora.rank)


def test_fedkseed_is_the_zeroth_order_strategy() -> None:
    config = parse_run_config(
        {**TINY, "mode": "zo", "strategy.name": "fedkseed", "zo.pool-size": 16}
    )
    strategy = build_strategy(config, FedKSeed.initial_model(16))
    assert strategy.reply_kind == "seed-steps" and strategy.pool_size == 16
    with pytest.raises(ConfigError, match="mode zo aggregates seed scalars"):
        parse_run_config({**TINY, "mode": "zo"})
    with pytest.raises(ConfigError, match="set mode = zo"):
        parse_run_config({**TINY, "strategy.name": "fedkseed"})
    with pytest.raises(ConfigError, match="mode zo needs constant"):
        parse_run_config(
            {**TINY, "mode": "zo", "strategy.name": "fedkseed", "train.lr-schedule": "cosine"}
        )


def test_only_weighted_sums_are_linear() -> None:
    # Secure aggregation can only ever deliver a sum: these three need nothing else.
    linear = {"fedavg", "ffa-lora", "fedsa-lora", "fedkseed"}
    assert {n for n, c in STRATEGIES.items() if c.linear} == linear


@pytest.mark.parametrize("name", LORA_STRATEGIES)
def test_mixed_ranks_are_served_or_refused_at_start(name: str) -> None:
    config = parse_run_config({**TINY, "strategy.name": name, "lora.client-ranks": "2,4"})
    if STRATEGIES[name].mixed_ranks:
        assert build_strategy(config, _initial(config)).name == name
    else:
        with pytest.raises(ConfigError, match=f"strategy '{name}' needs every client at lora.rank"):
            build_strategy(config, _initial(config))


def test_client_ranks_must_fit_the_server_rank() -> None:
    with pytest.raises(ConfigError, match="between 1 and lora.rank"):
        parse_run_config({**TINY, "lora.client-ranks": "2,8"})
    with pytest.raises(ConfigError, match="comma-separated integers"):
        parse_run_config({**TINY, "lora.client-ranks": "2;4"})


def test_lora_fair_takes_its_options() -> None:
    raw = {
        **TINY,
        "strategy.name": "lora-fair",
        "strategy.lora-fair-lambda": 0.5,
        "strategy.lora-fair-solver": "closed-form",
        "strategy.lora-fair-steps": 7,
    }
    config = parse_run_config(raw)
    strategy = build_strategy(config, _initial(config))
    assert (strategy.lam, strategy.solver, strategy.steps) == (0.5, "closed-form", 7)


@pytest.mark.parametrize("name", LORA_STRATEGIES)
def test_secure_aggregation_serves_linear_strategies_and_refuses_the_others(name: str) -> None:
    config = parse_run_config({**TINY, "strategy.name": name, "secagg.enabled": True})
    if STRATEGIES[name].linear:
        assert build_strategy(config, _initial(config)).name == name
    else:
        with pytest.raises(ConfigError, match="needs each update on its own"):
            build_strategy(config, _initial(config))
