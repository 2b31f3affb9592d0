"""Node configs on a real deployment: one SuperNode trains on its own JSONL file, one takes
zeroth-order steps on the LoRA factors by its own config, and one names a file it cannot read,
whose error reply the server logs while the run goes on with the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federated.cli.flower_cli import run_config_text
from federated.deploy.commands import supernode_command
from tests.deployment import LocalDeployment

pytestmark = pytest.mark.slow

NODES = 3
OWN_ROWS = 30
RUN = {
    "model.name": "tiny-llama",
    "num-server-rounds": 1,
    "train.lr": 0.02,
    "train.local-steps": 4,
    "eval.max-examples": 8,
    "strategy.min-available-nodes": NODES,
    "strategy.min-train-nodes": NODES - 1,
    "server.node-wait-timeout": 120.0,
}


def _own_file(folder: Path) -> Path:
    path = folder / "own.jsonl"
    rows = [
        {"text": f"What is {i} plus {i}?", "target": f"{i} plus {i} is {2 * i}."}
        for i in range(OWN_ROWS)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_nodes_bring_their_own_data_and_mode_and_a_bad_file_stops_only_its_node(
    tmp_path: Path,
) -> None:
    federation = LocalDeployment(tmp_path, NODES, authenticate=False)
    missing = tmp_path / "absent.jsonl"
    extra = {0: f'data-file="{_own_file(tmp_path)}"', 1: 'mode="zo"', 2: f'data-file="{missing}"'}
    federation.start_superlink()
    try:
        for node in range(NODES):
            line = supernode_command(federation.deployment, node, NODES)
            start = line.index("--node-config '") + len("--node-config '")
            federation.start_node(node, f"{line[:start]}{extra[node]} {line[start:]}")
        out = tmp_path / "results"
        run = federation.run(run_config_text({**RUN, "output-dir": str(out), "run-name": "n"}))
        assert run.wait(timeout=900) == 0, federation.log("run.log")[-3000:]
    finally:
        federation.close()

    rounds = [json.loads(line) for line in (out / "n" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1]
    for record in rounds[1:]:
        clients = {c["partition_id"]: c for c in record["clients"]}
        assert clients[0]["status"] == "ok" and clients[1]["status"] == "ok", clients
        assert clients[0]["num_examples"] == OWN_ROWS - 6  # data.held-out-fraction 0.2
        assert clients[1]["bytes_up"] < 3000  # (seed, scalar) pairs, not factors
        assert clients[2]["status"].startswith("rejected: client failed:"), clients[2]
        assert f"node config 'data-file' = '{missing}': No such file" in clients[2]["status"]
    assert rounds[1]["test_loss"] < rounds[0]["test_loss"]
    log = federation.log("run.log")
    assert "rejected the reply of node" in log and "No such file" in log
