"""Poisoned replies through Flower's simulation engine: rejected with a reason, run goes on."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.simulate import simulate

pytestmark = pytest.mark.slow


def test_bad_updates_are_rejected_and_the_round_goes_on(tmp_path: Path) -> None:
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
    folder = simulate(config, num_clients=4, poison=True)

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
