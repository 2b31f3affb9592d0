"""``fedtune run`` always ends, with the run's status as its exit code: a client that hangs
forever costs its own replies only (its simulation worker is replaced), and Ctrl-C stops the run
through the SuperLink, keeps its checkpoint and prints the line that resumes it, which, pasted
as printed, ends where the uninterrupted run ends."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from federated.cli.flower_cli import ROOT, run_config_text
from tests.fault_apps import hanging_app
from tests.in_process import run_federation
from tests.run_files import assert_same_outcomes, assert_same_tensors, checkpoint_tensors, rounds

pytestmark = pytest.mark.slow

BASE = {
    "model.name": "tiny-bert",
    "data.name": "wordnet",
    "data.num-classes": 3,
    "data.max-per-class": 60,
    "data.partitioner": "iid",
    "train.local-steps": 3,
    "strategy.fraction-evaluate": 0.5,
    "seed": 3,
}


def test_a_client_hanging_forever_costs_its_own_replies_only(flower, tmp_path: Path) -> None:
    app = hanging_app(tmp_path / "app", partition=1)
    config = {
        **BASE,
        "num-server-rounds": 3,
        "server.round-timeout": 15.0,
        "strategy.min-available-nodes": 4,
        "strategy.min-train-nodes": 3,
        "output-dir": str(tmp_path),
        "run-name": "hang",
    }
    started = time.monotonic()
    proc = flower.run(run_config_text(config), num_supernodes=4, app=app, timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "finished:completed" in proc.stdout
    assert time.monotonic() - started < 240  # three rounds of at most 15 s each, and startup
    trained = rounds(tmp_path / "hang")[1:]
    assert len(trained) == 3
    for record in trained:
        status = {c["partition_id"]: c["status"] for c in record["clients"]}
        assert record["clients_accepted"] == 3
        assert [p for p, s in status.items() if s != "ok"] == [1]
    # Each round's stuck worker was stopped and replaced, so the others never waited behind it.
    assert (proc.stdout + proc.stderr).count("a fresh one started in its place") >= 2


def _wait_for_checkpoint(folder: Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / "checkpoint.json").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)


def test_ctrl_c_stops_the_run_and_its_printed_resume_line_ends_as_the_whole_run(
    flower, tmp_path: Path
) -> None:
    config = {**BASE, "num-server-rounds": 4, "train.local-steps": 20, "output-dir": str(tmp_path)}
    # The uninterrupted run, in process: the same apps give the same floats as in simulation.
    whole = run_federation(tmp_path, "whole", config, clients=2)

    folder = tmp_path / "stopped"
    command = flower.command(run_config_text({**config, "run-name": "stopped"}), 2)
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=flower.env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _wait_for_checkpoint(folder, proc, timeout=300)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGINT
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert "finished:stopped" in output
    time.sleep(5)  # a run that went on in the background would record another round by now
    recorded = [r["round"] for r in rounds(folder)]
    assert not (folder / "summary.json").exists() and max(recorded) < 4

    line = re.search(r"go on with:\n  (fedtune run .*)", output)
    assert line, output[-2000:]
    resumed = subprocess.run(
        line.group(1),
        shell=True,
        cwd=ROOT,
        env=flower.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert_same_outcomes(rounds(folder), rounds(whole))
    assert_same_tensors(checkpoint_tensors(folder), checkpoint_tensors(whole))
    assert json.loads((folder / "summary.json").read_text())["rounds"] == 4
