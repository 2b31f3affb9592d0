"""Kill the server with SIGKILL right after a round's checkpoint, resume, and get what the
uninterrupted run gets: equal metrics, weights and DP state, for LoRA with fedavg under
record-level DP, whose clients' epsilon carries over (strategies with state of their own,
FlexLoRA and FedKSeed-Pro, resume in process: tests/test_resume.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from federated.privacy.secret_randomness import INSECURE_SEED_ENV
from tests.run_files import assert_same_outcomes, assert_same_tensors, checkpoint_tensors, rounds
from tests.simulate import ROOT, simulate

pytestmark = pytest.mark.slow

CLIENTS, ROUNDS, KILLED_AFTER = 4, 2, 1
BASE = {
    "model.name": "tiny-bert",
    "data.name": "wordnet",
    "data.num-classes": 3,
    "data.max-per-class": 60,
    "data.partitioner": "dirichlet",
    "num-server-rounds": ROUNDS,
    "train.local-steps": 3,
    "strategy.fraction-train": 0.5,
    "strategy.min-train-nodes": 2,
    "strategy.fraction-evaluate": 0.5,
    "seed": 3,
}
CASES = {
    "fedavg-record-dp": {
        "dp.mode": "record",
        "dp.noise-multiplier": 1.0,
        "train.batch-size": 8,
    },
}
# The secret generators of DP noise and sampling, fixed so that two runs can be compared.
ENV = {INSECURE_SEED_ENV: "5"}

# Run the simulation in a process of its own, and SIGKILL its whole process group as soon as
# the checkpoint of the given round is on disk: nothing gets to finish or clean up.
_KILLED_RUN = """
import json, os, signal, sys
import server.round_record as loop
from tests.simulate import simulate
config, clients, last = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
save = loop.save_checkpoint
def save_then_die(folder, checkpoint, **options):
    save(folder, checkpoint, **options)
    if checkpoint.round == last:
        os.killpg(0, signal.SIGKILL)
loop.save_checkpoint = save_then_die
simulate(config, clients, env=json.loads(sys.argv[4]))
"""


def _killed_after(config: dict, last_round: int) -> Path:
    argv = [json.dumps(config), str(CLIENTS), str(last_round), json.dumps(ENV)]
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, *argv],
        cwd=ROOT,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.wait(timeout=600) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of it is still alive
    return Path(config["output-dir"]) / config["run-name"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_run_killed_after_a_round_resumes_to_the_uninterrupted_result(
    case: str, tmp_path: Path
) -> None:
    config = {**BASE, **CASES[case], "output-dir": str(tmp_path)}
    whole = simulate({**config, "run-name": "whole"}, CLIENTS, env=ENV)

    folder = _killed_after({**config, "run-name": "killed"}, KILLED_AFTER)
    assert [r["round"] for r in rounds(folder)] == list(range(KILLED_AFTER + 1))
    assert not (folder / "summary.json").exists()
    simulate({**config, "run-name": "resumed", "resume": str(folder)}, CLIENTS, env=ENV)

    assert not (tmp_path / "resumed").exists()  # the run went on in its own folder
    assert_same_outcomes(rounds(folder), rounds(whole))
    assert_same_tensors(checkpoint_tensors(folder), checkpoint_tensors(whole))
    assert (folder / "summary.json").is_file()
    if case == "fedavg-record-dp":  # the spending before the kill is still counted after it
        spent = {
            c["partition_id"]: c["epsilon"]
            for r in rounds(folder)[1:]
            for c in r["clients"]
            if c["epsilon"] is not None
        }
        first = {c["partition_id"]: c["epsilon"] for c in rounds(folder)[1]["clients"]}
        assert any(spent[p] > first[p] for p in first if first[p] is not None)
