"""A real deployment on loopback: a SuperLink with TLS, node authentication and a database,
three registered SuperNodes started from the lines ``fedtune commands`` prints, and runs
through ``fedtune run``; nodes it must refuse leave a clear line and the run goes on."""

from __future__ import annotations

import json

import pytest

from tests.deployment import LocalDeployment

pytestmark = pytest.mark.slow

NODES = 3
RUN = {
    "model.name": "'tiny-llama'", "num-server-rounds": "2", "train.lr": "0.02",
    "train.local-steps": "4", "eval.max-examples": "16", "strategy.min-available-nodes": "3",
    "strategy.min-train-nodes": "3", "server.node-wait-timeout": "120.0",
}  # fmt: skip


def _config(values: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    deployment = LocalDeployment(tmp_path_factory.mktemp("deployment"), NODES)
    deployment.start_superlink()
    try:
        for node in range(NODES):
            registered = deployment.register(node)
            assert registered.returncode == 0, registered.stdout + registered.stderr
            deployment.start_node(node)
        yield deployment
    finally:
        deployment.close()


def test_lora_rounds_over_tls_with_registered_nodes(federation: LocalDeployment) -> None:
    out = federation.folder / "results"
    run = federation.run(_config({**RUN, "output-dir": f"'{out}'", "run-name": "'lora'"}))
    assert run.wait(timeout=900) == 0, federation.log("run.log")[-3000:]
    rounds = [
        json.loads(line) for line in (out / "lora" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(r["clients_accepted"] == NODES for r in rounds[1:])
    assert sorted(c["partition_id"] for c in rounds[1]["clients"]) == [0, 1, 2]
    assert rounds[2]["test_loss"] < rounds[0]["test_loss"]
