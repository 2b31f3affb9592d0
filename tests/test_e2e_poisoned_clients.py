"""Poisoned replies through Flower's simulation engine: rejected with a reason, run goes on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from flwr.simulation import run_simulation
from safetensors.torch import load_file

from tests.poisoned_apps import CONFIG_ENV

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_bad_updates_are_rejected_and_the_round_goes_on(tmp_path: Path, monkeypatch) -> None:
    config = {
        "model.name": "tiny-bert",
        "data.name": "wordnet",
        "data.num-classes": 4,
        "data.max-per-class": 200,
        "data.partitioner": "iid",
        "num-server-rounds": 2,
        "output-dir": str(tmp_path),
        "run-name": "poisoned",
    }
    monkeypatch.setenv(CONFIG_ENV, json.dumps(config))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # Ray's workers import tests.poisoned_apps
    from tests.poisoned_apps import client, server

    run_simulation(
        server, client, num_supernodes=4, backend_config={"client_resources": {"num_cpus": 1}}
    )

    folder = tmp_path / "poisoned"
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][1:]
    assert len(rounds) == 2
    for record in rounds:
        assert record["clients_sampled"] == 4 and record["clients_accepted"] == 2
        statuses = sorted(c["status"] for c in record["clients"])
        assert statuses[:2] == ["ok", "ok"]
        assert any("non-finite values" in s for s in statuses)
        assert any("tensor names differ: missing" in s for s in statuses)
        assert math.isfinite(record["test_loss"])
    final = load_file(str(folder / "checkpoint.safetensors"))
    assert all(t.isfinite().all() for t in final.values())
    assert (folder / "adapter" / "adapter_config.json").is_file()
