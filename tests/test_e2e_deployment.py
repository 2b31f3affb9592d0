"""A real deployment on loopback: a SuperLink with TLS, node authentication and a database,
three registered SuperNodes started from the lines ``fedtune commands`` prints, LoRA and
zeroth-order runs through ``fedtune run`` that end where the same runs in Flower's simulation
engine end; an unregistered node, a node that trusts another CA and a plaintext node are
refused with a clear line each while the runs go on with the good nodes. A fourth registered
node claims node 1's partition: the runs bind partitions to keys (the table ``fedtune commands``
writes), so it is refused whatever the node IDs; a run without the table trains that partition
on neither node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from federated.cli.flower_cli import run_config_text
from federated.deploy.certificates import make_certificates
from federated.deploy.node_keys import make_node_key
from tests.deployment import LocalDeployment
from tests.simulate import simulate

pytestmark = pytest.mark.slow

NODES = 3
RUNS = {
    "lora": {
        "model.name": "tiny-llama",
        "num-server-rounds": 2,
        "train.lr": 0.02,
        "train.local-steps": 4,
    },
    "zo": {
        "model.name": "tiny-llama",
        "num-server-rounds": 2,
        "mode": "zo",
        "strategy.name": "fedkseed",
        "zo.params": "lora",
        "zo.pool-size": 64,
        "zo.lr": 0.02,
        "zo.eps": 1e-2,
        "train.local-steps": 6,
    },
}
COMMON = {
    "eval.max-examples": 16,
    "strategy.fraction-evaluate": 0.0,
    "strategy.min-available-nodes": NODES,
    "strategy.min-train-nodes": NODES,
    "server.node-wait-timeout": 120.0,
}
INTRUDERS = ("unregistered", "other-ca", "plaintext")  # the order _intruders starts them in
CLAIMANT = NODES + len(INTRUDERS)  # the registered node that claims node 1's partition
MODEL_FILES = {"lora": "adapter/adapter_model.safetensors", "zo": "zo_sums.safetensors"}
# LoRA replies are the same floats in both engines. A zeroth-order client's replay cache holds
# whatever its process served before (a Ray actor serves several nodes, a SuperNode one), so its
# weights agree only up to float rounding, and a scalar (L+ − L−)/2ε carries that rounding times
# 1/2ε: agreement to 1% still tells a wrong seed, partition or step (those move a sum entirely).
TOLERANCE = {"lora": {"rtol": 1e-4, "atol": 1e-5}, "zo": {"rtol": 1e-2, "atol": 1e-4}}


def _intruders(d: LocalDeployment) -> dict[str, str]:
    """Three nodes the SuperLink must not admit: the command line of each."""
    other = make_certificates(d.folder / "other-ca", ["127.0.0.1"]).ca_cert
    unregistered, _ = make_node_key(d.folder / "unregistered.key")
    node = f"flower-supernode --superlink {d.deployment.address}"
    config = "--node-config 'partition-id=0 num-partitions=3'"
    ca, key = d.deployment.certs / "ca.crt", d.deployment.node_key(0)
    return {
        "unregistered": f"{node} --root-certificates {ca} "
        f"--auth-supernode-private-key {unregistered} {config}",
        "other-ca": f"{node} --root-certificates {other} --auth-supernode-private-key {key} "
        f"{config}",
        # A node retries forever by default; two retries make it say why it gives up.
        "plaintext": f"{node} --insecure --max-retries 2 {config}",
    }


def _start_claimant(d: LocalDeployment) -> None:
    """A node with a registered key of its own that says it holds partition 1."""
    private, public = make_node_key(d.folder / "claimant.key")
    registered = d.flwr("supernode", "register", str(public), "fedtune")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    d.start_node(
        CLAIMANT,
        f"flower-supernode --superlink {d.deployment.address} "
        f"--root-certificates {d.deployment.certs / 'ca.crt'} "
        f"--auth-supernode-private-key {private} "
        "--node-config 'partition-id=1 num-partitions=3'",
    )


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    deployment = LocalDeployment(tmp_path_factory.mktemp("deployment"), NODES)
    deployment.start_superlink()
    try:
        for node in range(NODES):
            registered = deployment.register(node)
            assert registered.returncode == 0, registered.stdout + registered.stderr
            deployment.start_node(node)
        for offset, command in enumerate(_intruders(deployment).values()):
            deployment.start_node(NODES + offset, command)
        _start_claimant(deployment)
        yield deployment
    finally:
        deployment.close()


def _run(federation: LocalDeployment, mode: str) -> Path:
    out = federation.folder / "results"
    table = federation.deployment.write_partition_table()
    config = {
        **RUNS[mode],
        **COMMON,
        "output-dir": str(out),
        "run-name": mode,
        "server.partition-keys": str(table),
    }
    run = federation.run(run_config_text(config))
    assert run.wait(timeout=900) == 0, federation.log("run.log")[-3000:]
    return out / mode


@pytest.mark.parametrize("mode", ["lora", "zo"])
def test_a_deployed_run_ends_where_the_simulated_one_does(
    federation: LocalDeployment, mode: str, tmp_path: Path
) -> None:
    folder = _run(federation, mode)
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    for record in rounds[1:]:
        assert sorted(c["partition_id"] for c in record["clients"]) == [0, 1, 2]
        assert all(c["status"] == "ok" for c in record["clients"])
    assert rounds[2]["test_loss"] < rounds[0]["test_loss"]
    assert "binds to another node's key" in federation.log("run.log")  # the claimant, refused

    simulated = simulate(
        {**RUNS[mode], **COMMON, "output-dir": str(tmp_path), "run-name": mode}, NODES
    )
    deployed = load_file(folder / MODEL_FILES[mode])
    reference = load_file(simulated / MODEL_FILES[mode])
    assert deployed.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(deployed[key], value, **TOLERANCE[mode])


def test_nodes_the_superlink_must_not_admit_are_refused_with_a_reason(
    federation: LocalDeployment,
) -> None:
    for i in range(len(INTRUDERS)):
        assert federation.nodes[NODES + i].wait(timeout=120) != 0  # each gives up, and says why
    logs = {name: federation.log(f"node-{NODES + i}.log") for i, name in enumerate(INTRUDERS)}
    assert "Failed to activate SuperNode" in logs["unregistered"]
    assert "No SuperNode found with the given public key" in federation.log("superlink.log")
    assert "CERTIFICATE_VERIFY_FAILED" in logs["other-ca"]
    assert "Server disconnected without sending a response" in logs["plaintext"]
    home = Path(federation.env["FLWR_HOME"]) / "config.toml"
    address = federation.deployment.address
    home.write_text(
        home.read_text() + f'\n[superlink.plain]\naddress = "{address}"\ninsecure = true\n'
    )
    listed = federation.flwr("ls", "plain")
    assert listed.returncode != 0
    assert "Connection to the SuperLink is unavailable" in listed.stdout + listed.stderr


def test_without_the_key_table_a_claimed_partition_goes_to_neither_node(
    federation: LocalDeployment,
) -> None:
    out = federation.folder / "results"
    config = {
        **RUNS["lora"],
        **COMMON,
        "num-server-rounds": 1,
        "output-dir": str(out),
        "run-name": "contested",
        "strategy.min-available-nodes": 2,
        "strategy.min-train-nodes": 2,
    }
    run = federation.run(run_config_text(config))
    assert run.wait(timeout=900) == 0, federation.log("run.log")[-3000:]
    record = [json.loads(line) for line in (out / "contested" / "metrics.jsonl").open()][1]
    assert sorted(c["partition_id"] for c in record["clients"]) == [0, 2]
    assert "partition 1 is claimed by nodes" in federation.log("run.log")
