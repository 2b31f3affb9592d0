"""Record-level DP's tuned defaults: taken for options left at the default, never over a value
the user set, only under record-level DP of LoRA, and the same as the privacy sweep's best."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.privacy.sweep import PHYSICAL_BATCH
from federated.config import default_flat_config, parse_run_config, run_config_to_flat
from federated.config.cli import main
from federated.config.dp_defaults import TUNED_RECORD_LEVEL

PRIVATE = {"dp.record-level": True, "dp.noise-multiplier": 1.0}
SWEEP = Path(__file__).resolve().parents[1] / "benchmarks" / "privacy" / "sweep.json"
# The sweep's knobs as run-config keys.
KNOBS = {
    "batch": "train.batch-size", "steps": "train.local-steps", "lr": "train.lr",
    "rank": "lora.rank", "strategy": "strategy.name", "clip": "dp.max-grad-norm",
}  # fmt: skip


def test_a_record_level_run_takes_the_tuned_values_of_the_options_it_leaves_alone() -> None:
    flat = run_config_to_flat(parse_run_config(PRIVATE))
    defaults = default_flat_config()
    for key, value in TUNED_RECORD_LEVEL.items():
        assert value != defaults[key]
        assert flat[key] == value
    untouched = set(defaults) - set(TUNED_RECORD_LEVEL) - set(PRIVATE)
    assert all(flat[key] == defaults[key] for key in untouched)


@pytest.mark.parametrize("key", sorted(TUNED_RECORD_LEVEL))
def test_a_value_the_user_sets_is_kept(key: str) -> None:
    own = {"train.batch-size": 48, "dp.physical-batch": 8, "train.local-steps": 3,
           "train.lr": 5e-4}[key]  # fmt: skip
    flat = run_config_to_flat(parse_run_config({**PRIVATE, key: own}))
    assert flat[key] == own
    others = set(TUNED_RECORD_LEVEL) - {key}
    assert all(flat[k] == TUNED_RECORD_LEVEL[k] for k in others)


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"dp.client-level": True, "dp.client-noise-multiplier": 1.0},
        {**PRIVATE, "dp.tuned-defaults": False},
        {**PRIVATE, "mode": "zo", "strategy.name": "fedkseed"},
    ],
    ids=["no-dp", "client-level", "opted-out", "zeroth-order"],
)
def test_other_runs_keep_the_schemas_defaults(raw: dict) -> None:
    flat = run_config_to_flat(parse_run_config(raw))
    defaults = default_flat_config()
    assert all(flat[key] == defaults[key] for key in TUNED_RECORD_LEVEL)


def test_the_check_command_says_which_defaults_a_run_takes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--check", "dp.record-level=true dp.noise-multiplier=1.0 train.lr=5e-4"]) == 0
    said = capsys.readouterr().out
    assert "tuned defaults" in said and "train.batch-size=64" in said
    assert "train.lr" not in said
    assert main(["--check", "dp.record-level=true dp.noise-multiplier=1.0 "
                 "dp.tuned-defaults=false"]) == 0  # fmt: skip
    assert "tuned defaults" not in capsys.readouterr().out


def test_a_mistyped_opt_out_is_refused_not_read_as_true() -> None:
    with pytest.raises(ValueError, match="dp.tuned-defaults"):
        parse_run_config({**PRIVATE, "dp.tuned-defaults": "no"})


def test_the_tuned_values_are_the_privacy_sweeps_best() -> None:
    # With ~580 records a client, where the settings move accuracy off chance.
    best = json.loads(SWEEP.read_text())["sweeps"]["580"]["best"]
    defaults = default_flat_config()
    for knob, key in KNOBS.items():
        assert TUNED_RECORD_LEVEL.get(key, defaults[key]) == best[knob], key
    # Batches above one pass are virtual steps of the sweep's physical batch.
    assert TUNED_RECORD_LEVEL["dp.physical-batch"] == PHYSICAL_BATCH < best["batch"]
