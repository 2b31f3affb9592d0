"""The run config: defaults agree with pyproject and docs/configuration.md; bad input gets one
clear line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict

from federated.config import (
    ConfigError,
    config_reference_markdown,
    default_flat_config,
    parse_run_config,
    run_config_to_flat,
)
from federated.config.dp_defaults import PLAIN
from federated.model.workspace import corpus_for, lora_model
from server.run import loading
from strategies.registry import option_defaults

ROOT = Path(__file__).resolve().parents[1]


def _app_config() -> dict:
    """pyproject's app config, flattened as Flower hands it to the apps."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return flatten_dict(pyproject["tool"]["flwr"]["app"]["config"])


def test_pyproject_app_config_equals_schema_and_strategy_option_defaults() -> None:
    assert _app_config() == {**default_flat_config(), **option_defaults()}


def test_a_client_passes_the_strategy_options_through() -> None:
    # A client parses the whole run config, pyproject's strategy options included, and has no
    # strategies to check them against: they reach the config as given.
    raw = {**_app_config(), "strategy.name": "lora-fair", "strategy.lora-fair.lambda": 0.5}
    config = parse_run_config(raw)
    assert dict(config.strategy.options) == {**option_defaults(), "strategy.lora-fair.lambda": 0.5}
    assert run_config_to_flat(config).items() >= config.strategy.options.items()
    assert parse_run_config(run_config_to_flat(config)) == config
    assert hash(config) == hash(parse_run_config(raw))  # a config still keys caches


def test_the_configuration_page_documents_every_key_with_the_generated_table() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert config_reference_markdown() in page


def test_defaults_parse_and_round_trip() -> None:
    config = parse_run_config(default_flat_config())
    resolved = {k: v for k, v in PLAIN.items() if not k.startswith("dp.record.")}  # no DP here
    assert run_config_to_flat(config) == {**default_flat_config(), **resolved}  # auto resolved
    assert parse_run_config(run_config_to_flat(config)) == config
    assert config.task == "causal-lm"


def test_overrides_reach_their_section() -> None:
    config = parse_run_config(
        {"lora.rank": 4, "train.lr": 1, "model.name": "tiny-bert", "data.name": "wordnet"}
    )
    assert config.lora.rank == 4
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.task == "classification"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"lora.rnak": 8}, "unknown key 'lora.rnak'"),
        ({"rank": 8}, "did you mean 'lora.rank'"),
        ({"dp.record-level": True}, "key 'dp.record-level' is gone: set dp.mode = 'record'"),
        ({"dp.distributed": True}, "key 'dp.distributed' is gone: set dp.mode = 'distributed'"),
        (
            {"strategy.lora-fair-lambda": 0.5},
            "key 'strategy.lora-fair-lambda' is gone: set strategy.lora-fair.lambda",
        ),
        (
            {"strategy.lora-fair-solver": "closed-form"},
            "key 'strategy.lora-fair-solver' is gone: set strategy.lora-fair.solver",
        ),
        (
            {"strategy.lora-fair-steps": 7},
            "key 'strategy.lora-fair-steps' is gone: set strategy.lora-fair.steps",
        ),
        ({"lora.rank": 0}, "'lora.rank' = 0: must be >= 1"),
        ({"lora.rank": "8"}, "'lora.rank' = '8': expected int, got str"),
        ({"lora.rank": True}, "expected int, got bool"),
        ({"train.lr": float("nan")}, "must be a finite number"),
        ({"train.lr": -0.1}, "'train.lr' = -0.1: must be >= 0.0"),
        ({"data.partitioner": "random"}, "allowed values are iid, dirichlet, natural"),
        ({"train.local-steps": 3, "train.local-epochs": 1.0}, "set exactly one of them above 0"),
        ({"data.name": "imagenet"}, "use chatterbot, wordnet or a .jsonl/.csv path"),
        ({"data.num-classes": 8}, "only applies to data.name = wordnet"),
        ({"data.name": "wordnet"}, "is a classification dataset, but model 'smollm2-135m'"),
        (
            {"strategy.min-available-nodes": 1, "strategy.min-train-nodes": 3},
            "must be >= strategy.min-train-nodes",
        ),
        ({"dp.mode": "record"}, "set dp.noise-multiplier, or dp.target-epsilon"),
        (
            {
                "dp.mode": "record",
                "dp.noise-multiplier": 1.0,
                "train.local-steps": 0,
                "train.local-epochs": 1.0,
            },
            "record-level DP accounts fixed steps per round",
        ),
        ({"dp.record.grad-sample-mode": "ew"}, "allowed values are hooks, functorch, ghost"),
        ({"audit.canaries": 10**9}, "must be <= 10000"),
        ({"tracking.backend": "wandb"}, "allowed values are none, tensorboard, mlflow"),
        ({"tracking.uri": "sqlite:///x.db"}, "'tracking.uri' = 'sqlite:///x.db': applies to"),
        (
            {"tracking.backend": "tensorboard", "tracking.experiment": "x"},
            "'tracking.experiment' = 'x': applies to tracking.backend = mlflow",
        ),
        ({"tracking.backend": "mlflow", "tracking.uri": "runs/mlflow.db"}, "must be a URI"),
        ({"tracking.backend": "mlflow", "tracking.experiment": " "}, "name an MLflow experiment"),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config(raw)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_lora_on_an_embedding_layer_is_refused_in_one_line() -> None:
    # Refused always, so also under record-level DP: opacus has no per-sample gradients for it.
    config = parse_run_config({"model.name": "tiny-llama", "lora.target-modules": "embed_tokens"})
    with pytest.raises(ConfigError, match="'lora.target-modules' = 'embed_tokens': .* embedding"):
        lora_model(config)


def test_a_missing_data_file_stops_the_server_not_the_nodes() -> None:
    # A node that trains on its own data file needs no copy of the server's.
    config = parse_run_config({"data.name": "/nowhere/data.jsonl"})
    with pytest.raises(ConfigError) as err:
        loading("data.name", config.data.name, lambda: corpus_for(config))
    assert str(err.value).startswith("run config 'data.name' = '/nowhere/data.jsonl': ")
    assert "No such file" in str(err.value) and "\n" not in str(err.value)


def test_check_command_explains_a_run_config_string(capsys: pytest.CaptureFixture[str]) -> None:
    from federated.config.cli import main

    assert main(["--check", "lora.rnak=3"]) == 2
    assert "unknown key 'lora.rnak'; did you mean 'lora.rank'?" in capsys.readouterr().out
    assert main(["--check", "lora.rank=16 train.lr=5e-4"]) == 0
    assert capsys.readouterr().out.startswith("ok: smollm2-135m on chatterbot")
    assert main(["--check", "strategy.name='lora-fair' strategy.lora-fair.steps=0"]) == 0
    assert "left to the server: strategy.name, strategy.lora-fair.steps" in capsys.readouterr().out


def test_learning_rate_schedules_across_rounds() -> None:
    def lrs(schedule: str) -> list[float]:
        train = parse_run_config({"train.lr": 1.0, "train.lr-schedule": schedule}).train
        return [train.lr_at(r, 4) for r in (1, 2, 3, 4)]

    assert lrs("constant") == [1.0] * 4
    assert lrs("linear") == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert lrs("cosine") == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])
