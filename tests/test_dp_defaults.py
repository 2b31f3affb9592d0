"""Auto settings: a value the user writes is kept, always; the auto values resolve to the privacy
sweep's best under record-level DP of LoRA and to the plain settings otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.privacy.sweep import PHYSICAL_BATCH
from federated.config import ConfigError, default_flat_config, parse_run_config, run_config_to_flat
from federated.config.cli import main
from federated.config.dp_defaults import PLAIN, TUNED_RECORD_LEVEL

PRIVATE = {"dp.mode": "record", "dp.noise-multiplier": 1.0}
SWEEP = Path(__file__).resolve().parents[1] / "benchmarks" / "privacy" / "sweep.json"
# The sweep's knobs as run-config keys.
KNOBS = {
    "batch": "train.batch-size",
    "steps": "train.local-steps",
    "lr": "train.lr",
    "rank": "lora.rank",
    "strategy": "strategy.name",
    "clip": "dp.record.max-grad-norm",
}


def _flat(raw: dict) -> dict:
    return run_config_to_flat(parse_run_config(raw))


def test_an_explicit_batch_and_step_count_under_record_level_dp_are_kept() -> None:
    flat = _flat({**PRIVATE, "train.batch-size": 4, "train.local-steps": 5})
    assert (flat["train.batch-size"], flat["train.local-steps"]) == (4, 5)


@pytest.mark.parametrize("key", sorted(TUNED_RECORD_LEVEL))
def test_a_value_the_user_sets_is_kept_even_the_plain_one(key: str) -> None:
    # The plain value is what the schema's default used to be: it was replaced before.
    for own in (
        PLAIN[key],
        {
            "train.batch-size": 48,
            "dp.record.physical-batch": 8,
            "train.local-steps": 3,
            "train.lr": 5e-4,
        }[key],
    ):
        flat = _flat({**PRIVATE, key: own})
        assert flat[key] == own
        others = set(TUNED_RECORD_LEVEL) - {key}
        assert all(flat[k] == TUNED_RECORD_LEVEL[k] for k in others)


def test_auto_values_under_record_level_dp_resolve_to_the_sweeps_best() -> None:
    flat = _flat(PRIVATE)
    defaults = default_flat_config()
    for key, value in TUNED_RECORD_LEVEL.items():
        assert defaults[key] not in (value, PLAIN[key])  # the auto value is neither
        assert flat[key] == value
    untouched = set(defaults) - set(TUNED_RECORD_LEVEL) - set(PRIVATE)
    assert all(flat[key] == defaults[key] for key in untouched)


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"dp.mode": "client", "dp.noise-multiplier": 1.0},
        {**PRIVATE, "mode": "zo", "strategy.name": "fedkseed"},
        {"mode": "zo", "strategy.name": "fedkseed"},
    ],
    ids=["no-dp", "client-level", "zeroth-order-record-level", "zeroth-order"],
)
def test_other_runs_resolve_auto_values_to_the_plain_settings(raw: dict) -> None:
    flat = _flat(raw)
    # The record-level options resolve under record-level DP only; elsewhere they stay unset.
    record = raw.get("dp.mode") == "record"
    expected = {k: v for k, v in PLAIN.items() if record or not k.startswith("dp.record.")}
    assert {key: flat[key] for key in expected} == expected
    unset = default_flat_config()["dp.record.physical-batch"]
    assert record or flat["dp.record.physical-batch"] == unset


def test_explicit_auto_values_resolve_and_a_resolved_config_parses_to_itself() -> None:
    auto = {key: default_flat_config()[key] for key in TUNED_RECORD_LEVEL}
    flat = _flat({**PRIVATE, **auto, "train.batch-size": 0})
    assert {key: flat[key] for key in TUNED_RECORD_LEVEL} == TUNED_RECORD_LEVEL
    # What the server writes to summary.json, or sends on, means the same run when read back.
    assert _flat(flat) == flat
    assert _flat(_flat({})) == _flat({})


def test_local_steps_zero_with_epochs_set_counts_its_steps_from_the_epochs() -> None:
    train = parse_run_config({"train.local-epochs": 1.5}).train
    assert (train.local_steps, train.local_epochs) == (0, 1.5)
    with pytest.raises(ConfigError, match="set exactly one of them above 0"):
        parse_run_config({"train.local-steps": 3, "train.local-epochs": 1.5})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"dp.tuned-defaults": False}, "run config has unknown key 'dp.tuned-defaults'"),
        ({"train.batch-size": -1}, "'train.batch-size' = -1: must be >= 0"),
        ({"train.batch-size": False}, "'train.batch-size' = False: expected int, got bool"),
        ({"train.lr": -1.0}, "'train.lr' = -1.0: must be >= 0.0"),
        ({"dp.record.physical-batch": -2}, "'dp.record.physical-batch' = -2: must be >= -1"),
    ],
)
def test_a_removed_key_and_values_below_auto_are_refused(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_run_config({**PRIVATE, **raw})
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_check_command_says_what_the_auto_values_become(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--check", "dp.mode='record' dp.noise-multiplier=1.0 train.lr=5e-4"]) == 0
    said = capsys.readouterr().out.splitlines()[0]
    assert said.startswith("auto settings, the privacy sweep's best for record-level DP of LoRA")
    assert "train.batch-size=64" in said and "train.lr" not in said
    set_all = " ".join(f"{key}={value}" for key, value in TUNED_RECORD_LEVEL.items())
    assert main(["--check", f"dp.mode='record' dp.noise-multiplier=1.0 {set_all}"]) == 0
    assert "auto settings" not in capsys.readouterr().out
    assert main(["--check", "lora.rank=4"]) == 0  # the plain settings: nothing to announce
    assert capsys.readouterr().out.startswith("ok: ")


def test_the_tuned_values_are_the_privacy_sweeps_best() -> None:
    # With ~580 records a client, where the settings move accuracy off chance.
    best = json.loads(SWEEP.read_text())["sweeps"]["580"]["best"]
    defaults = default_flat_config()
    for knob, key in KNOBS.items():
        assert TUNED_RECORD_LEVEL.get(key, defaults[key]) == best[knob], key
    # Batches above one pass are virtual steps of the sweep's physical batch.
    assert TUNED_RECORD_LEVEL["dp.record.physical-batch"] == PHYSICAL_BATCH < best["batch"]
