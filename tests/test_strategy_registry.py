"""Strategies by name: options from the run config, mixed ranks refused or served, linearity."""

from __future__ import annotations

from pathlib import Path

import pytest

from federated.config import ConfigError, parse_run_config
from federated.model.workspace import lora_model
from federated.protocol.global_model import GlobalModel, zo_initial_model
from strategies.lora_fair import LoraFairOptions
from strategies.reference import strategy_options_markdown
from strategies.registry import STRATEGIES, build_strategy, strategy_options

ROOT = Path(__file__).resolve().parents[1]

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
    strategy = build_strategy(config, zo_initial_model(16))
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
        "strategy.lora-fair.lambda": 0.5,
        "strategy.lora-fair.solver": "closed-form",
        "strategy.lora-fair.steps": 7,
    }
    config = parse_run_config(raw)
    assert strategy_options(config) == LoraFairOptions(lam=0.5, solver="closed-form", steps=7)
    strategy = build_strategy(config, _initial(config))
    assert (strategy.lam, strategy.solver, strategy.steps) == (0.5, "closed-form", 7)


def test_another_strategys_options_are_refused_unless_left_at_their_default() -> None:
    # Flower hands every run all of pyproject's keys: a default is no one's choice.
    assert strategy_options(parse_run_config({"strategy.lora-fair.lambda": 0.01})) is None
    config = parse_run_config(
        {**TINY, "strategy.name": "flexlora", "strategy.lora-fair.lambda": 0.5}
    )
    with pytest.raises(ConfigError) as err:
        build_strategy(config, _initial(config))
    assert str(err.value) == (
        "run config 'strategy.lora-fair.lambda' = 0.5: applies to strategy.name = 'lora-fair', "
        "and this run's is 'flexlora'"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"strategy.name": "fedprox"},
            "run config 'strategy.name' = 'fedprox': allowed values are the registered "
            "strategies, fedavg, ffa-lora, fedsa-lora, flora, fedex-lora, flexlora, lora-fair, "
            "hetlora, fedkseed",
        ),
        (
            {"strategy.name": "lora-fair", "strategy.lora-fair.lamda": 0.5},
            "run config has unknown key 'strategy.lora-fair.lamda'; did you mean "
            "'strategy.lora-fair.lambda'?",
        ),
        (
            {"strategy.fedavg.steps": 3},
            "run config has unknown key 'strategy.fedavg.steps'; did you mean "
            "'strategy.lora-fair.steps'?",
        ),
        (
            {"strategy.name": "lora-fair", "strategy.lora-fair.steps": 0},
            "run config 'strategy.lora-fair.steps' = 0: must be >= 1",
        ),
        (
            {"strategy.name": "lora-fair", "strategy.lora-fair.lambda": "high"},
            "run config 'strategy.lora-fair.lambda' = 'high': expected float, got str",
        ),
        (
            {"strategy.name": "lora-fair", "strategy.lora-fair.solver": "svd"},
            "run config 'strategy.lora-fair.solver' = 'svd': allowed values are iterative, "
            "closed-form",
        ),
    ],
)
def test_a_strategy_and_its_options_are_checked_when_the_server_builds_it(
    raw: dict, expected: str
) -> None:
    # A client's parse passes them (it has no strategies to check them against).
    config = parse_run_config({**TINY, **raw})
    with pytest.raises(ConfigError) as err:
        build_strategy(config, _initial(config))
    assert str(err.value) == expected


def test_the_strategies_page_lists_every_strategys_options_with_the_generated_tables() -> None:
    page = (ROOT / "docs" / "strategies.md").read_text()
    assert strategy_options_markdown() in page


@pytest.mark.parametrize("name", LORA_STRATEGIES)
def test_secure_aggregation_serves_linear_strategies_and_refuses_the_others(name: str) -> None:
    config = parse_run_config({**TINY, "strategy.name": name, "secagg.enabled": True})
    if STRATEGIES[name].linear:
        assert build_strategy(config, _initial(config)).name == name
    else:
        with pytest.raises(ConfigError, match="needs each update on its own"):
            build_strategy(config, _initial(config))
