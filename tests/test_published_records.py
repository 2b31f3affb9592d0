"""What a run publishes depends on one client's data only through what its privacy covers.

The whole server run, in process, on neighbouring federations: under SecAgg+ one node holds one
record more; under client-level DP (its secret generators fixed) one node holds data or none.
``metrics.jsonl``, ``summary.json`` and the values ``loss.png`` plots may differ only in what
the protocol releases: under SecAgg+ the sums (the model moved by the summed update, the
round's statistics), under client-level DP the noised model's test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from federated.privacy.secret_randomness import INSECURE_SEED_ENV
from server.loss_plot import SERIES
from server.tracking import numbers
from tests.in_process import run_federation

pytestmark = pytest.mark.slow  # whole runs of the apps, in process

RUN = {
    "model.name": "tiny-llama",
    "num-server-rounds": 2,
    "lora.rank": 2,
    "lora.dropout": 0.0,
    "train.local-steps": 2,
    "train.batch-size": 4,
    "strategy.min-available-nodes": 4,
}
# Differ from run to run whatever the data: how long things took.
TIMINGS = {
    "round_seconds",
    "aggregation_seconds",
    "test_seconds",
    "wall_seconds",
    "running_seconds",
    "aggregation_seconds_mean",
}


def _rows(count: int) -> list[dict]:
    return [{"text": f"what is {i} plus {i}?", "target": f"{2 * i}"} for i in range(count)]


def _run(tmp: Path, name: str, run: dict, own_rows: list[dict]) -> tuple[list, dict]:
    """A run whose first node trains on ``own_rows`` (a file of its own), the others on their
    partitions: its published rounds and summary."""
    own = tmp / f"{name}.jsonl"
    own.write_text("".join(json.dumps(row) + "\n" for row in own_rows))
    folder = run_federation(tmp, name, {**RUN, **run}, node_configs={0: {"data-file": str(own)}})
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return rounds, json.loads((folder / "summary.json").read_text())


def _differing(a: dict, b: dict, prefix: str = "") -> set[str]:
    """The keys (dotted) whose values differ between two records, but for how long things took
    (whatever the data: ``TIMINGS``, and each SecAgg+ stage's seconds)."""
    out = set()
    for key in a.keys() | b.keys():
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            out |= _differing(x, y, f"{prefix}{key}.")
        elif x != y and key not in TIMINGS and key != "seconds":
            out.add(prefix + key)
    return out


def _plotted(rounds: list[dict]) -> dict[str, list]:
    return {key: [r.get(key) for r in rounds] for key, _ in SERIES}


def test_under_secagg_one_record_more_changes_only_the_sums(tmp_path: Path) -> None:
    secure = {"secagg.enabled": True}
    a_rounds, a_summary = _run(tmp_path, "a", secure, _rows(20))
    b_rounds, b_summary = _run(tmp_path, "b", secure, _rows(21))
    sums = {"train_loss", "held_out_loss", "held_out_perplexity", "test_loss", "test_perplexity"}
    for a, b in zip(a_rounds, b_rounds, strict=True):
        assert a.get("clients") == b.get("clients")  # nothing per client moves with its data
        assert _differing(a, b) <= sums
    assert a_rounds[1]["train_loss"] != b_rounds[1]["train_loss"]  # the sums do see it
    assert _differing(a_summary, b_summary) <= {
        "run_name",
        "config.run-name",
        "model_files",
        "final_test.test_loss",
        "final_test.test_perplexity",
        "final_held_out_loss",
        "final_test.test_seconds",
    }
    for clients in (r["clients"] for r in a_rounds[1:]):
        assert all(
            c["num_examples"] is c["train_loss"] is c["train_seconds"] is None for c in clients
        )


def test_under_client_level_dp_one_client_more_changes_only_noised_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(INSECURE_SEED_ENV, "7")  # the same secret sample and noise in both
    private = {
        "dp.mode": "client",
        "dp.noise-multiplier": 1.0,
        "strategy.fraction-train": 0.75,
        "dp.client.clip-norm": 0.05,
        "tracking.backend": "tensorboard",
    }
    with_rows, with_summary = _run(tmp_path, "with", private, _rows(20))
    without_rows, without_summary = _run(tmp_path, "without", private, [])
    noised = {"test_loss", "test_perplexity"}  # the noised model on the server's test set
    for a, b in zip(with_rows, without_rows, strict=True):
        assert _differing(a, b) <= noised
        assert "clients" not in a and "train_loss" not in a and "held_out_loss" not in a
    assert with_rows[1]["test_loss"] != without_rows[1]["test_loss"]
    assert set(with_rows[1]) - TIMINGS == {
        "round",
        "test_loss",
        "test_perplexity",
        "client_dp_clip_norm",
        "client_dp_noised_unclipped_fraction",
        "client_dp_expected_clients",
        "client_dp_epsilon",
    }
    assert _differing(with_summary, without_summary) <= {
        "run_name",
        "config.run-name",
        "model_files",
        "final_test.test_loss",
        "final_test.test_perplexity",
        "final_test.test_seconds",
    }
    plotted = _differing(_plotted(with_rows), _plotted(without_rows))
    assert plotted <= {"test_loss"}
    # The operator's own record keeps what was withheld; the tracker gets what is published.
    operator = (tmp_path / "with" / "operator.jsonl").read_text().splitlines()
    assert "clients" in json.loads(operator[1])
    events = EventAccumulator(str(tmp_path / "with" / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set().union(*(numbers(r) for r in with_rows))
    assert "clients_sampled" in json.loads(operator[1])
