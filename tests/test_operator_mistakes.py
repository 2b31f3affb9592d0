"""An operator's mistakes, through the real ServerApp and ClientApps (in process): a disk that
fills up mid-run ends the run in one line with the last checkpoint kept; a resume with another
number of nodes is refused (the data would be split another way), and one with the run's number
ends where the uninterrupted run ends; an output folder that cannot be written stops the run
before any node trains."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

import federated.results
from federated.config import ConfigError
from server.start_checks import RunFailure, check_writable
from tests.in_process import run_federation
from tests.run_files import assert_same_outcomes, assert_same_tensors, checkpoint_tensors, rounds
from tests.test_secagg_rounds import LORA

RUN = {**LORA, "num-server-rounds": 2}


@pytest.mark.slow
def test_a_full_disk_keeps_the_checkpoint_and_a_resume_needs_the_runs_node_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = run_federation(tmp_path, "whole", RUN)

    append = federated.results._append

    def disk_fills_in_round_2(path: Path, record: dict) -> None:
        if record.get("round") == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        append(path, record)

    monkeypatch.setattr(federated.results, "_append", disk_fills_in_round_2)
    with pytest.raises(RunFailure, match=r"could not write .*metrics\.jsonl \(No space left"):
        run_federation(tmp_path, "full", RUN)
    monkeypatch.undo()
    folder = tmp_path / "full"
    assert json.loads((folder / "checkpoint.json").read_text())["round"] == 1

    resume = {**RUN, "resume": str(folder)}
    with pytest.raises(
        RunFailure,
        match="split its data across 4 partitions, and the nodes now say 5 .* resume with 4",
    ):
        run_federation(tmp_path, "again", resume, clients=5)
    run_federation(tmp_path, "again", resume, clients=4)
    assert_same_outcomes(rounds(folder), rounds(whole))
    assert_same_tensors(checkpoint_tensors(folder), checkpoint_tensors(whole))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["resumes"] == 1 and summary["wall_seconds"] >= summary["running_seconds"]


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    regular = tmp_path / "a-file"
    regular.write_text("not a folder")
    with pytest.raises(
        ConfigError,
        match=r"run config 'output-dir': results cannot be written "
        r"in .*a-file/results \(Not a directory\)",
    ):
        check_writable(regular / "results", "output-dir")
    check_writable(tmp_path / "new" / "results", "output-dir")  # made where it can be
    assert (tmp_path / "new" / "results").is_dir()
    assert not any((tmp_path / "new" / "results").iterdir())  # the probe is gone
