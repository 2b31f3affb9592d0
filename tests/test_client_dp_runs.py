"""Client-level DP through whole runs (in process, ``tests.in_process``): clients Poisson-sampled
in secret, clipped and noised aggregation accounted each round, training stopped before the
round that would overspend the budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federated.privacy.accounting import PrivacyLedger
from tests.in_process import run_federation

pytestmark = pytest.mark.slow

CLIENTS, RATE, NOISE, DELTA = 8, 0.5, 2.0, 1e-5


def _epsilon(rounds: int) -> float:
    ledger = PrivacyLedger()
    ledger.spend(NOISE, RATE, rounds)
    return ledger.epsilon(DELTA)


def _run(out: Path, name: str) -> list[dict]:
    budget = (_epsilon(2) + _epsilon(3)) / 2  # room for two rounds, not three
    config = {
        "model.name": "tiny-llama",
        "num-server-rounds": 4,
        "lora.rank": 4,
        "train.lr": 0.02,
        "train.local-steps": 2,
        "strategy.fraction-train": RATE,
        "strategy.fraction-evaluate": 0.0,
        "strategy.min-train-nodes": 1,
        "strategy.min-available-nodes": CLIENTS,
        "dp.mode": "client",
        "dp.noise-multiplier": NOISE,
        "dp.client.clip-norm": 0.05,
        "dp.target-epsilon": budget,
        "seed": 5,
        "output-dir": str(out),
        "run-name": name,
    }
    folder = run_federation(out, name, config, CLIENTS)
    assert (folder / "summary.json").is_file()  # the run finished and saved its model
    return folder


def _rounds(folder: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def launches(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("client-dp")
    return [_run(out, f"launch-{i}") for i in range(2)]


def test_client_level_dp_accounts_rounds_and_stops_at_the_budget(launches) -> None:
    for rounds in map(_rounds, launches):
        assert [r["round"] for r in rounds] == [0, 1, 2]  # the third round would overspend
        trained = rounds[1:]
        assert [r["client_dp_epsilon"] for r in trained] == pytest.approx(
            [_epsilon(1), _epsilon(2)]
        )
        assert all(r["client_dp_clip_norm"] == 0.05 for r in trained)
        assert all(r["client_dp_expected_clients"] == CLIENTS * RATE for r in trained)
        assert all(r["client_dp_noised_unclipped_fraction"] is None for r in trained)


def _participants(folder: Path) -> list[set[int]]:
    """Who took part in each round: in the operator's own record, which the run does not
    publish (the sample must stay secret for amplification by sampling)."""
    rounds = _rounds(folder, "operator.jsonl")
    return [{c["partition_id"] for c in r["clients"] if c["bytes_down"]} for r in rounds[1:]]


def test_the_same_seed_draws_different_participants_each_launch(launches) -> None:
    # With 8 clients at rate 1/2, two secret draws of two rounds agree with chance 1 / 2^16.
    first, second = map(_participants, launches)
    assert all("clients" not in r for folder in launches for r in _rounds(folder))
    assert first != second
    assert all(0 <= len(drawn) <= CLIENTS for drawn in first + second)
