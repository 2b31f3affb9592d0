"""Clients that crash or hang, through Flower's simulation engine: the rounds go on with the
others and count them; a round that cannot get enough sound replies is tried again and then
fails the run, its last checkpoint kept."""

from __future__ import annotations

import math

import pytest

from tests import run_files
from tests.simulate import simulate

pytestmark = pytest.mark.slow

BASE = {
    "model.name": "tiny-bert",
    "data.name": "wordnet",
    "data.num-classes": 3,
    "data.max-per-class": 100,
    "data.partitioner": "iid",
    "train.local-steps": 2,
    "strategy.fraction-evaluate": 0.0,
}


def test_a_third_of_clients_crashing_or_hanging_each_round_leaves_a_finished_run(tmp_path) -> None:
    clients = 10
    config = {
        **BASE,
        "num-server-rounds": 3,
        "server.round-timeout": 12.0,
        "strategy.min-available-nodes": clients,
        "strategy.min-train-nodes": 3,
        "output-dir": str(tmp_path),
        "run-name": "flaky",
    }
    folder = simulate(config, clients, flaky=(0.3, 20.0))
    rounds = run_files.rounds(folder)[1:]
    assert len(rounds) == 3 and (folder / "summary.json").is_file()
    crashed = hung = 0
    for record in rounds:
        statuses = [c["status"] for c in record["clients"]]
        crashed += sum("crashed in the middle of the round" in s for s in statuses)
        hung += sum(s == "no reply before server.round-timeout" for s in statuses)
        assert record["clients_accepted"] == statuses.count("ok") >= 3
        assert math.isfinite(record["test_loss"])
    assert crashed > 0 and hung > 0  # both kinds happened, and were counted


def test_a_round_without_enough_sound_replies_is_retried_then_fails_the_run(tmp_path) -> None:
    config = {
        **BASE,
        "num-server-rounds": 2,
        "server.round-retries": 1,
        "output-dir": str(tmp_path),
        "run-name": "all-bad",
    }
    with pytest.raises(
        Exception,
        match=r"round 1 did not train in 2 tries \(0 sound replies, "
        "strategy.min-train-nodes asks for 2\); no round "
        "finished, so there is no checkpoint",
    ):
        simulate(config, 3, corrupt={"train": {0: "nan", 1: "nan", 2: "nan"}})
    rounds = run_files.rounds(tmp_path / "all-bad")
    assert [r["round"] for r in rounds] == [0]  # nothing trained, nothing recorded as trained
