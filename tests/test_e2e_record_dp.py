"""Record-level DP end to end through Flower's simulation engine: DP-SGD on LoRA clients, each
reporting its noised record count and the epsilon it has spent (the count's release, then every
round's steps at the rate that count gives), releasing no loss and no held-out metrics, and
declining the round that would overspend its budget. Secret generators are fixed by a test seed,
so that the expected epsilons can be worked out here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federated.config import parse_run_config
from federated.model.workspace import client_indices
from federated.privacy.canaries import client_canaries
from federated.privacy.record_count import count_release, noised_count
from federated.privacy.secret_randomness import INSECURE_SEED_ENV, secret_generator
from tests.simulate import simulate

pytestmark = pytest.mark.slow

CLIENTS, ROUNDS, STEPS, NOISE = 3, 3, 4, 1.0
RUN = {
    "model.name": "tiny-llama",
    "data.partitioner": "iid",  # equal shares: equal sampling rates and so equal epsilons
    "num-server-rounds": ROUNDS,
    "lora.rank": 4,
    "train.lr": 0.02,
    "train.local-steps": STEPS,
    "train.batch-size": 8,
    "dp.mode": "record",
    "dp.noise-multiplier": NOISE,
    "dp.record.max-grad-norm": 1.0,
    "audit.canaries": 30,  # records too: each client's count holds the canaries it was dealt
}


SEED = {INSECURE_SEED_ENV: "3"}


def _counts() -> list[int]:
    """Each client's noised record count, as its fixed secret generator draws it."""
    config = parse_run_config(RUN)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(INSECURE_SEED_ENV, SEED[INSECURE_SEED_ENV])
        return [
            noised_count(
                len(client_indices(config, p, CLIENTS)[0])
                + len(client_canaries(config, p, CLIENTS, 0)),
                config.dp.record.count_noise,
                secret_generator("record-count", p),
            )
            for p in range(CLIENTS)
        ]


def _epsilons_after(rounds: int) -> list[float]:
    """Each client's epsilon after ``rounds`` rounds of this run's DP-SGD, by partition."""
    config = parse_run_config(RUN)
    spent = []
    for count in _counts():
        ledger = count_release(config.dp.record.count_noise)
        ledger.spend(NOISE, min(1.0, config.train.batch_size / count), STEPS * rounds)
        spent.append(ledger.epsilon(config.dp.delta))
    return spent


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[float, list[dict], Path]:
    # A budget that two rounds fit into and the third does not, for every client.
    two, three = _epsilons_after(2), _epsilons_after(3)
    assert max(two) < min(three)
    budget = (max(two) + min(three)) / 2
    out = tmp_path_factory.mktemp("dp")
    config = {**RUN, "dp.target-epsilon": budget, "output-dir": str(out), "run-name": "dp"}
    folder = simulate(config, num_clients=CLIENTS, env=SEED)
    lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
    return budget, [json.loads(line) for line in lines], Path(folder)


def test_private_rounds_train_and_report_only_noised_releases(dp_run) -> None:
    _, rounds, _ = dp_run
    expected = {1: _epsilons_after(1), 2: _epsilons_after(2)}
    for r in rounds[1:3]:
        assert r["clients_accepted"] == CLIENTS
        by_partition = sorted(r["clients"], key=lambda c: c["partition_id"])
        assert [c["num_examples"] for c in by_partition] == _counts()
        reported = [c["epsilon"] for c in by_partition]
        assert reported == pytest.approx(expected[r["round"]], rel=1e-6)
        assert all(c["train_loss"] is None for c in r["clients"])
        assert r["train_loss"] is None and r["held_out_loss"] is None
        assert r["eval_bytes_up"] == 0  # nobody was asked about held-out records
    assert rounds[2]["test_loss"] < rounds[0]["test_loss"]


def test_the_round_past_the_budget_is_declined_and_the_run_finishes(dp_run) -> None:
    budget, rounds, _ = dp_run
    last = rounds[3]
    assert last["round"] == ROUNDS and last["clients_accepted"] == 0
    assert all(c["status"].startswith("declined: privacy budget spent") for c in last["clients"])
    assert all(c["epsilon"] <= budget for c in last["clients"])
    # Nobody trained: the global model, and so its test loss, stayed as it was.
    assert last["test_loss"] == pytest.approx(rounds[2]["test_loss"])


def test_the_audit_of_a_private_run_stays_under_the_accountants_epsilon(dp_run) -> None:
    _, rounds, folder = dp_run
    audit = json.loads((folder / "audit.json").read_text())
    spent = max(c["epsilon"] for r in rounds[1:] for c in r["clients"] if c.get("epsilon"))
    assert audit["accountant_epsilon"] == {"record_level": spent}
    assert audit["canaries"] == 30 and audit["guesses"] >= 0
    assert audit["epsilon_lower_bound"] <= spent
    assert json.loads((folder / "summary.json").read_text())["audit"] == audit


def test_zeroth_order_clients_train_under_dp_and_report_epsilon(tmp_path: Path) -> None:
    config = {
        **RUN,
        "mode": "zo",
        "strategy.name": "fedkseed",
        "num-server-rounds": 2,
        "zo.params": "full",
        "zo.perturbation": "low-rank",
        "zo.pool-size": 256,
        "zo.lr": 2e-3,
        "output-dir": str(tmp_path),
        "run-name": "dp-zo",
    }
    folder = simulate(config, num_clients=CLIENTS)
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    first, second = rounds[1], rounds[2]
    assert first["clients_accepted"] == second["clients_accepted"] == CLIENTS
    for a, b in zip(
        sorted(first["clients"], key=lambda c: c["node_id"]),
        sorted(second["clients"], key=lambda c: c["node_id"]),
        strict=True,
    ):
        assert 0 < a["epsilon"] < b["epsilon"]  # each round spends more
