"""What split mode refuses at start, each in one line that names the setting."""

from __future__ import annotations

import pytest

from federated.config import ConfigError, parse_run_config

SPLIT = {"mode": "split", "model.name": "tiny-llama", "strategy.name": "fedavg"}


def test_split_mode_parses_with_its_section() -> None:
    config = parse_run_config({**SPLIT, "split.cut-layer": 1, "split.keep-fraction": 0.25})
    assert config.mode == "split" and config.split.keep_fraction == 0.25


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"dp.mode": "record", "dp.noise-multiplier": 1.0}, "cut-layer activations"),
        ({"dp.mode": "client", "dp.noise-multiplier": 1.0}, "do not cover it yet"),
        ({"secagg.enabled": True}, "SecAgg"),
        ({"strategy.name": "flora"}, "strategy.name = fedavg"),
        ({"model.name": "tiny-bert", "data.name": "wordnet"}, "causal LM"),
        ({"split.activation-noise": 1.0}, "needs split.activation-clip"),
        ({"split.keep-fraction": 0.0}, "split.keep-fraction"),
        ({"train.local-steps": 0, "train.local-epochs": 1.0}, "set train.local-steps above 0"),
    ],
)
def test_what_split_mode_refuses(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_run_config({**SPLIT, **raw})


def test_split_options_outside_split_mode_are_refused() -> None:
    with pytest.raises(ConfigError, match="'split.prompt-length' = 4: applies to mode = split"):
        parse_run_config({"split.prompt-length": 4})


FALLBACK = {"simulation.split-fallback": True, "simulation.population": "phone-low:1"}


def test_split_devices_in_a_lora_run_take_the_split_section_but_no_prompt() -> None:
    config = parse_run_config({**FALLBACK, "split.cut-layer": 2, "split.local-steps": 0})
    assert config.mode == "lora" and config.split.cut_layer == 2
    with pytest.raises(ConfigError, match="'split.prompt-length' = 4: applies to mode = split$"):
        parse_run_config({**FALLBACK, "split.prompt-length": 4})
    with pytest.raises(ConfigError, match="applies to mode = split or split devices"):
        parse_run_config({"split.cut-layer": 2})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"simulation.population": ""}, "set simulation.population"),
        ({"mode": "zo", "strategy.name": "fedkseed"}, "applies to mode = lora"),
        ({"dp.mode": "client", "dp.noise-multiplier": 1.0}, "'simulation.split-fallback'.*yet"),
        ({"model.name": "tiny-bert", "data.name": "wordnet"}, "causal LM"),
    ],
)
def test_what_split_devices_in_a_lora_run_refuse(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_run_config({**FALLBACK, **raw})
