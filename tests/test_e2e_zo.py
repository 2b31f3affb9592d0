"""FedKSeed end to end through Flower's simulation engine: every client shares one seed pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from federated.protocol import message_keys as keys
from tests.simulate import simulate

pytestmark = pytest.mark.slow

POOL, STEPS = 512, 10
RUN = {
    "mode": "zo",
    "strategy.name": "fedkseed",
    "model.name": "tiny-llama",
    "num-server-rounds": 2,
    "zo.params": "full",
    "zo.perturbation": "low-rank",
    "zo.pool-size": POOL,
    "zo.lr": 2e-3,
    "zo.eps": 1e-3,
    "train.local-steps": STEPS,
    "train.batch-size": 8,
    "strategy.fraction-evaluate": 0.0,
}


@pytest.fixture(scope="module")
def zo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("zo")
    folder = simulate({**RUN, "output-dir": str(out), "run-name": "zo"}, num_clients=4)
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return folder, rounds


def test_zeroth_order_rounds_lower_the_test_loss(zo_run) -> None:
    _, rounds = zo_run
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(r["clients_accepted"] == 4 for r in rounds[1:])
    assert rounds[2]["test_loss"] < rounds[0]["test_loss"]


def test_messages_are_a_few_kilobytes(zo_run) -> None:
    _, rounds = zo_run
    for r in rounds[1:]:
        per_client_up = r["train_bytes_up"] / 4
        # T (index, scalar) pairs of 12 bytes, plus Flower's record headers and the metrics.
        assert per_client_up < 12 * STEPS + 3000
        # At most K sums of 4 bytes, plus headers.
        assert r["train_bytes_down"] / 4 < 4 * POOL + 2000
    # Round 1: every sum is still zero, nothing but headers travels. Later rounds: each client
    # was in the round before, so it gets the (index, sum) pairs of that round's seeds alone.
    assert rounds[1]["train_bytes_down"] / 4 < 2000
    for r in rounds[2:]:
        assert r["train_bytes_down"] / 4 < 8 * 4 * STEPS + 2000


def test_the_pool_alone_is_the_checkpoint(zo_run) -> None:
    folder, _ = zo_run
    sums = load_file(str(folder / "zo_sums.safetensors"))[keys.SEED_SUMS]
    assert sums.shape == (POOL,) and int((sums != 0).sum()) > 0
    recipe = json.loads((folder / "zo_model.json").read_text())
    assert recipe["pool-size"] == POOL and recipe["perturbation"] == "low-rank"
