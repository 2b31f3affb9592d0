"""Recovery of a real deployment on loopback: a SuperNode killed mid-run and restarted takes
part again (under a new node ID, as a device without node authentication comes back), its lost
replies recorded as lost, not rejected; a SuperLink killed mid-run (its ServerApp with it) ends
``fedtune run`` with the line that resumes the run, and restarted on its database lets the run
resume from its checkpoint, end where an uninterrupted run ends, and count its wall time from
the first launch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from federated.cli.flower_cli import run_config_text
from tests.deployment import LocalDeployment
from tests.simulate import simulate

pytestmark = pytest.mark.slow

NODES = 3
RUN = {
    "model.name": "tiny-llama",
    "num-server-rounds": 2,
    "train.lr": 0.02,
    "train.local-steps": 3,
    "eval.max-examples": 16,
    "strategy.min-available-nodes": 2,
    "strategy.min-train-nodes": 2,
    "server.node-wait-timeout": 120.0,
    "server.round-timeout": 60.0,
    "strategy.fraction-evaluate": 0.0,
}
ADAPTER = "adapter/adapter_model.safetensors"


def _rounds(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def _wait_for_round(folder: Path, server_round: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(r["round"] == server_round for r in _rounds(folder)):
            return
        time.sleep(0.5)
    raise AssertionError(f"round {server_round} never finished")


def _start(folder: Path, authenticate: bool) -> LocalDeployment:
    deployment = LocalDeployment(folder, NODES, authenticate)
    deployment.start_superlink()
    for node in range(NODES):
        if authenticate:
            assert deployment.register(node).returncode == 0
        deployment.start_node(node)
    return deployment


@pytest.fixture
def federation(tmp_path: Path):
    deployment = _start(tmp_path / "deployment", authenticate=True)
    yield deployment
    deployment.close()


def test_a_restarted_supernode_takes_part_again(tmp_path: Path) -> None:
    federation = _start(tmp_path / "deployment", authenticate=False)
    try:
        out = federation.folder / "results"
        config = {**RUN, "output-dir": str(out), "run-name": "node"}
        run = federation.run(run_config_text(config))
        # Round 1 starts as round 0 is recorded: node 1 dies with round 1's message sent to it,
        # and comes back (under a new node ID) in time for round 2.
        _wait_for_round(out / "node", 0)
        federation.kill(federation.nodes[1])  # a crash: no goodbye to the SuperLink
        federation.start_node(1)
        assert run.wait(timeout=900) == 0, federation.log("run.log")[-3000:]
    finally:
        federation.close()
    rounds = _rounds(out / "node")
    assert [r["round"] for r in rounds] == [0, 1, 2]
    lost = [c for r in rounds[1:] for c in r["clients"] if c["status"] != "ok"]
    assert lost and all(c["status"].startswith(("unreachable", "no reply")) for c in lost)
    last = {c["partition_id"]: c for c in rounds[-1]["clients"] if c["status"] == "ok"}
    assert set(last) == {0, 1, 2}, rounds[-1]["clients"]
    first = {c["partition_id"]: c["node_id"] for c in rounds[1]["clients"]}
    assert last[1]["node_id"] != first[1]  # partition 1 is back, under its new node ID
    _assert_recorded_as_it_happened(rounds, out / "node")


def _assert_recorded_as_it_happened(rounds: list[dict], folder: Path) -> None:
    """Nothing here was rejected: the lost replies are counted as lost, each kind apart, in each
    round and in the summary; a node that did not train is not recorded as having trained."""
    lost_train = lost_eval = 0
    for record in rounds[1:]:
        statuses = [c["status"] for c in record["clients"]]
        gone = sum(s.startswith("unreachable") for s in statuses)
        silent = sum(s.startswith("no reply") for s in statuses)
        assert (record["clients_unreachable"], record["clients_no_reply"]) == (gone, silent)
        assert record["clients_rejected"] == 0
        assert record["clients_evaluated_only"] == statuses.count("evaluated only")
        lost_train += gone + silent
        lost_eval += sum(
            (c["eval_status"] or "").startswith(("unreachable", "no reply"))
            for c in record["clients"]
        )
        for client in record["clients"]:
            if client["status"] == "ok":
                assert client["partition_id"] is not None and client["num_examples"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["replies_rejected"] == 0
    assert summary["replies_unreachable"] + summary["replies_no_reply"] == lost_train > 0
    assert summary["evaluations_lost"] == lost_eval


def test_a_run_resumes_after_its_superlink_dies(federation: LocalDeployment, tmp_path) -> None:
    out = federation.folder / "results"
    config = {
        **RUN,
        "strategy.min-available-nodes": NODES,
        "strategy.min-train-nodes": NODES,
        "output-dir": str(out),
        "run-name": "link",
    }
    launched = time.monotonic()
    run = federation.run(run_config_text(config))
    _wait_for_round(out / "link", 1)
    federation.kill(federation.superlink)  # and the ServerApp it runs
    assert run.wait(timeout=120) != 0
    said = federation.log("run.log")
    assert "the SuperLink did not answer for run" in said and "go on with:" in said, said[-2000:]
    # What the killed launch left: the rounds up to its last checkpoint stand as they were.
    checkpointed = json.loads((out / "link" / "checkpoint.json").read_text())["round"]
    kept = [r for r in _rounds(out / "link") if r["round"] <= checkpointed]
    assert checkpointed >= 1 and [r["round"] for r in kept] == list(range(checkpointed + 1))
    federation.start_superlink()  # the same database: the nodes' keys stay registered
    resumed = federation.run(run_config_text({**config, "resume": str(out / "link")}))
    assert resumed.wait(timeout=900) == 0, federation.log("run.log")[-3000:]
    rounds = _rounds(out / "link")
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[: len(kept)] == kept
    elapsed = time.monotonic() - launched
    summary = json.loads((out / "link" / "summary.json").read_text())
    assert summary["resumes"] == 1
    assert summary["running_seconds"] < summary["wall_seconds"] <= elapsed
    assert summary["wall_seconds"] > elapsed - 60  # both launches' start-up is all it leaves out
    reference = simulate({**config, "output-dir": str(tmp_path), "run-name": "whole"}, NODES)
    got, expected = load_file(out / "link" / ADAPTER), load_file(reference / ADAPTER)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5)
