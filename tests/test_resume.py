"""Checkpoints hold everything a run needs to go on, and a resume with a config that would
change the result is refused with the keys that differ."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import server.round_record as round_record
from federated.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint, save_checkpoint
from federated.config import ConfigError, parse_run_config, run_config_to_flat
from federated.protocol import message_keys as keys
from federated.protocol.global_model import GlobalModel, zo_initial_model
from server.resume import config_differences, resume_run
from strategies.registry import build_strategy
from tests.in_process import run_federation
from tests.run_files import assert_same_outcomes, assert_same_tensors, checkpoint_tensors, rounds
from tests.test_e2e_resume import BASE, CLIENTS, KILLED_AFTER

FACTORS = {"m.lora_A.weight": torch.randn(2, 4), "m.lora_B.weight": torch.randn(4, 2)}
RUN = {"model.name": "tiny-llama", "lora.rank": 2, "num-server-rounds": 4}


def _strategy(config: dict):
    parsed = parse_run_config(config)
    initial = zo_initial_model(8) if parsed.mode == "zo" else GlobalModel(dict(FACTORS))
    return parsed, build_strategy(parsed, initial)


def _write(folder: Path, config: dict, strategy, server_round: int) -> None:
    state = {
        "config": run_config_to_flat(parse_run_config(config)),
        "run-key": "ab" * 8,
        "strategy": strategy.state_info(),
        "replays": {"d" * 64: 1},
    }
    save_checkpoint(folder, Checkpoint(server_round, strategy.state_tensors(), state))


def test_a_checkpoint_reads_back_whole_and_leaves_no_partial_file(tmp_path: Path) -> None:
    _, strategy = _strategy(RUN)
    strategy.model = GlobalModel(dict(FACTORS), {"m": torch.ones(4, 4)})
    _write(tmp_path, RUN, strategy, 2)
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint.round == 2 and checkpoint.state["run-key"] == "ab" * 8
    assert checkpoint.state["replays"] == {"d" * 64: 1}
    assert torch.equal(checkpoint.tensors[f"{keys.BASE_DELTA}/m"], torch.ones(4, 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", CHECKPOINT_FILE]


def test_fedkseed_pro_state_survives_a_restart(tmp_path: Path) -> None:
    config = {**RUN, "mode": "zo", "strategy.name": "fedkseed", "zo.pool-size": 8, "zo.pro": True}
    parsed, strategy = _strategy(config)
    update = {
        keys.SEED_INDICES: torch.tensor([1, 3, 3]),
        keys.SEED_SCALARS: torch.tensor([0.5, -2.0, 1.0]),
    }
    strategy.aggregate([update], [1.0])
    _write(tmp_path, config, strategy, 1)
    _, restarted = _strategy(config)
    parsed = parse_run_config({**config, "resume": str(tmp_path)})
    resume_run(parsed, restarted)
    assert torch.equal(restarted.probabilities(), strategy.probabilities())
    assert torch.equal(restarted.model.trainable[keys.SEED_SUMS], strategy.ledger.sums)
    assert restarted.ledger.version == strategy.ledger.version == 1
    assert restarted.ledger.held == {}  # new nodes get the sums in full


def test_a_resume_that_would_change_the_result_is_refused_with_the_keys(tmp_path: Path) -> None:
    _, strategy = _strategy(RUN)
    _write(tmp_path, RUN, strategy, 1)
    changed = parse_run_config(
        {**RUN, "lora.rank": 2, "train.lr": 0.5, "seed": 9, "resume": str(tmp_path)}
    )
    with pytest.raises(ConfigError, match=r"differs .* in 2 key\(s\).*seed: run 0, now 9"):
        resume_run(changed, _strategy(RUN)[1])
    allowed = {**RUN, "run-name": "x", "server.round-timeout": 5.0, "resume": str(tmp_path)}
    assert resume_run(parse_run_config(allowed), _strategy(RUN)[1])[1].round == 1


def test_an_auto_rate_run_resumes_with_zo_lr_0_or_its_probed_rate_only(tmp_path: Path) -> None:
    config = {**RUN, "mode": "zo", "strategy.name": "fedkseed", "zo.pool-size": 8}
    _, strategy = _strategy(config)
    _write(tmp_path, {**config, "zo.lr": 2.5e-4}, strategy, 1)  # the rate the run probed
    for lr in (0.0, 2.5e-4):
        again = parse_run_config({**config, "zo.lr": lr, "resume": str(tmp_path)})
        assert resume_run(again, _strategy(config)[1])[1].round == 1
    other = parse_run_config({**config, "zo.lr": 1e-3, "resume": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"zo.lr: run 0.00025, now 0.001"):
        resume_run(other, _strategy(config)[1])


def test_resuming_nothing_or_a_finished_run_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no checkpoint.safetensors"):
        resume_run(parse_run_config({**RUN, "resume": str(tmp_path)}), _strategy(RUN)[1])
    _, strategy = _strategy(RUN)
    _write(tmp_path, RUN, strategy, 4)
    with pytest.raises(ConfigError, match="finished all its 4 rounds"):
        resume_run(parse_run_config({**RUN, "resume": str(tmp_path)}), _strategy(RUN)[1])
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        resume_run(parse_run_config({**RUN, "resume": str(tmp_path)}), _strategy(RUN)[1])


def test_only_where_and_how_long_may_differ() -> None:
    saved = {"seed": 1, "run-name": "a", "server.round-timeout": 1.0, "lora.rank": 2}
    now = {"seed": 1, "run-name": "b", "server.round-timeout": 9.0, "lora.rank": 4}
    assert config_differences(saved, now) == {"lora.rank": (2, 4)}


class _Killed(BaseException):
    """The server dying right after a checkpoint: past every ``except Exception`` on its way."""


# Strategies whose own state a resume must bring back: FlexLoRA's round-start factors, and
# FedKSeed-Pro's seed probabilities and replayed sums.
OWN_STATE = {
    "flexlora": {"strategy.name": "flexlora"},
    "fedkseed-pro": {
        "mode": "zo",
        "strategy.name": "fedkseed",
        "zo.params": "lora",
        "zo.pool-size": 64,
        "zo.pro": True,
        "train.local-steps": 6,
    },
}


@pytest.mark.slow  # three whole runs of the apps, in process
@pytest.mark.parametrize("case", sorted(OWN_STATE))
def test_a_run_dying_after_a_checkpoint_resumes_to_the_uninterrupted_result(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The strategy's state comes back from the checkpoint: killed after round 1 and resumed,
    the run ends with the uninterrupted run's metrics and weights (the kill by SIGKILL itself,
    through Flower's simulation: tests/test_e2e_resume.py)."""
    config = {**BASE, **OWN_STATE[case]}
    whole = run_federation(tmp_path, "whole", config, CLIENTS)
    save = round_record.save_checkpoint

    def save_then_die(folder: Path, checkpoint: Checkpoint, **options) -> None:
        save(folder, checkpoint, **options)
        if checkpoint.round == KILLED_AFTER:
            raise _Killed

    monkeypatch.setattr(round_record, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        run_federation(tmp_path, "killed", config, CLIENTS)
    monkeypatch.undo()
    folder = tmp_path / "killed"
    assert [r["round"] for r in rounds(folder)] == list(range(KILLED_AFTER + 1))
    assert not (folder / "summary.json").exists()
    run_federation(tmp_path, "resumed", {**config, "resume": str(folder)}, CLIENTS)
    # A zeroth-order model replayed in a process that moved it before rounds differently
    # (docs/running.md, "Reproducible runs"); LoRA runs repeat bit for bit.
    rel = 1e-4 if config.get("mode") == "zo" else 0.0
    assert_same_outcomes(rounds(folder), rounds(whole), rel)
    assert_same_tensors(checkpoint_tensors(folder), checkpoint_tensors(whole), rel)
