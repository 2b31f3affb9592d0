"""Client-level DP end to end through Flower's simulation engine: clipped, noised aggregation,
accounted each round, and training stops before the round that would overspend the budget."""

from __future__ import annotations

import json

import pytest

from federated.privacy.accounting import PrivacyLedger
from tests.simulate import simulate

pytestmark = pytest.mark.slow

CLIENTS, SAMPLED, NOISE, DELTA = 4, 2, 2.0, 1e-5


def _epsilon(rounds: int) -> float:
    ledger = PrivacyLedger()
    ledger.spend(NOISE, SAMPLED / CLIENTS, rounds)
    return ledger.epsilon(DELTA)


def test_client_level_dp_accounts_rounds_and_stops_at_the_budget(tmp_path) -> None:
    budget = (_epsilon(2) + _epsilon(3)) / 2  # room for two rounds, not three
    config = {
        "model.name": "tiny-llama",
        "num-server-rounds": 4,
        "lora.rank": 4,
        "train.lr": 0.02,
        "train.local-steps": 4,
        "strategy.fraction-train": 0.5,
        "strategy.min-train-nodes": SAMPLED,
        "strategy.min-available-nodes": CLIENTS,
        "dp.client-level": True,
        "dp.client-noise-multiplier": NOISE,
        "dp.client-clip-norm": 0.05,
        "dp.client-target-epsilon": budget,
        "output-dir": str(tmp_path),
        "run-name": "client-dp",
    }
    folder = simulate(config, num_clients=CLIENTS)
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1, 2]  # the third round would overspend
    assert [r["client_dp_epsilon"] for r in rounds[1:]] == pytest.approx([_epsilon(1), _epsilon(2)])
    assert all(r["client_dp_clip_norm"] == 0.05 for r in rounds[1:])
    assert (folder / "summary.json").is_file()  # the run still finished and saved its model
