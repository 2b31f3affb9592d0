"""A real deployment on loopback, as docs/deploy.md sets it up: its command lines run as the doc
prints them (after a check that ``fedtune commands`` prints exactly those), a SuperLink with TLS,
node authentication and a database, and three registered devices; LoRA and zeroth-order runs
from the printed run line, with the test's options in a second ``--run-config``, end where the
same runs in Flower's simulation engine end. Every row of the doc's table of what is refused
runs as a printed device line with one thing wrong (or Flower's own command where the row says
so), while the runs go on with the good nodes, and says the lines and exits with the status the
table states. A fourth registered node claims node 1's partition: the runs bind partitions to
keys (the table ``fedtune commands`` writes), so it is refused whatever the node IDs; a run
without the table trains that partition on neither node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from federated.cli.flower_cli import free_port, run_config_text
from federated.deploy.certificates import make_certificates
from federated.deploy.commands import Deployment
from federated.deploy.node_keys import make_node_key
from tests.deploy_doc import (
    REFUSED,
    PrintedLines,
    commands_in,
    fenced_bash,
    on_this_machine,
    refusals,
)
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
CERTS_AND_KEYS = "## 1. Certificates and keys"
COMMAND_LINES = "## 2. The command lines"
PLAINTEXT_FLWR = "a plaintext `flwr` connection"  # the table's one row that is no node
MODEL_FILES = {"lora": "adapter/adapter_model.safetensors", "zo": "zo_sums.safetensors"}
# LoRA replies are the same floats in both engines. A zeroth-order client's replay cache holds
# whatever its process served before (a Ray actor serves several nodes, a SuperNode one), so its
# weights agree only up to float rounding, and a scalar (L+ − L−)/2ε carries that rounding times
# 1/2ε: agreement to 1% still tells a wrong seed, partition or step (those move a sum entirely).
TOLERANCE = {"lora": {"rtol": 1e-4, "atol": 1e-5}, "zo": {"rtol": 1e-2, "atol": 1e-4}}


def _as_documented(folder: Path) -> tuple[LocalDeployment, PrintedLines]:
    """docs/deploy.md's sections 1 and 2 on this machine: the doc's lines run as it prints them,
    its devices' lines started; the printed lines, for the rest."""
    port = free_port()
    made = Deployment(
        f"127.0.0.1:{port}", NODES, folder / "certs", folder / "keys", folder / "superlink.db"
    )
    d = LocalDeployment(folder, NODES, made=made)
    for line in commands_in(on_this_machine(fenced_bash(CERTS_AND_KEYS)[0], folder, port)):
        done = d.shell(line)
        assert done.returncode == 0, f"{line}: {done.stderr}"
    command, shown = (on_this_machine(b, folder, port) for b in fenced_bash(COMMAND_LINES))
    printed = d.shell(command).stdout
    assert printed == shown, "docs/deploy.md does not show what fedtune commands prints"
    lines = PrintedLines.parse(printed)
    plain = f'[superlink.plain]\naddress = "{made.address}"\ninsecure = true\n'
    (d.home / "config.toml").write_text(f"{lines.connection}\n{plain}")
    d.start_superlink(lines.superlink)
    for line in lines.registrations:
        registered = d.shell(line)
        assert registered.returncode == 0, registered.stdout + registered.stderr
    for node, line in enumerate(lines.devices):
        d.start_node(node, line)
    return d, lines


def _refused(d: LocalDeployment, device: str) -> dict[str, str]:
    """Each node row of the doc's table as a command: device 0's printed line with one thing
    wrong, or Flower's own command in it (after the check) where the row says so."""
    address, port = d.deployment.address, d.deployment.address.rpartition(":")[2]
    trust, key = "--root-certificates certs/ca.crt", "keys/node-0.key"
    other = make_certificates(d.folder / "other-ca", ["127.0.0.1"]).ca_cert
    unregistered, _ = make_node_key(d.folder / "unregistered.key")
    supernode = device.partition(" && ")[2]
    return {
        "a device given a port where nothing listens": device.replace(
            address, f"127.0.0.1:{free_port()}"
        ),
        "a device given a host name that does not resolve": device.replace(
            address, f"fl.example.invalid:{port}"
        ),
        "a device given an address the SuperLink's certificate does not name": device.replace(
            address, f"127.0.0.2:{port}"
        ),
        "a device that trusts another CA": device.replace(trust, f"--root-certificates {other}"),
        "a plaintext device (`--insecure`)": device.replace(trust, "--insecure"),
        "a device whose key is not registered": device.replace(key, str(unregistered)),
        "`flower-supernode` alone, with a key and `--insecure`": supernode.replace(
            trust, "--insecure"
        ),
        "`flower-supernode` alone (which retries forever) at a port where nothing listens, "
        "with `--max-retries 2`": supernode.replace(address, f"127.0.0.1:{free_port()}")
        + " --max-retries 2",
    }


def _start_claimant(d: LocalDeployment, device: str, node: int) -> None:
    """A device with a registered key of its own whose line says it holds partition 1."""
    private, public = make_node_key(d.folder / "claimant.key")
    registered = d.shell(f"flwr supernode register {public} fedtune")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    line = device.replace("keys/node-0.key", str(private)).replace(
        "partition-id=0", "partition-id=1"
    )
    d.start_node(node, line)


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory):
    deployment, lines = _as_documented(tmp_path_factory.mktemp("deployment"))
    try:
        refused = _refused(deployment, lines.devices[0])
        for offset, command in enumerate(refused.values()):
            deployment.start_node(NODES + offset, command)
        _start_claimant(deployment, lines.devices[0], NODES + len(refused))
        yield deployment, lines, {who: NODES + i for i, who in enumerate(refused)}
    finally:
        deployment.close()


@pytest.fixture(scope="module")
def federation(documented) -> LocalDeployment:
    return documented[0]


def _run(documented, mode: str) -> Path:
    """The printed run line, from the app folder, with the test's options added (``server.*``
    among them: the printed ``server.partition-keys`` must survive them)."""
    federation, lines, _ = documented
    out = federation.folder / "results"
    config = {**RUNS[mode], **COMMON, "output-dir": str(out), "run-name": mode}
    run = federation.run(run_config_text(config), line=lines.run)
    assert run.wait(timeout=900) == 0, federation.log("run.log")[-3000:]
    return out / mode


@pytest.mark.parametrize("mode", ["lora", "zo"])
def test_a_deployed_run_ends_where_the_simulated_one_does(
    documented, mode: str, tmp_path: Path
) -> None:
    federation = documented[0]
    folder = _run(documented, mode)
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


def test_what_the_doc_says_is_refused_is_refused_with_its_lines_and_status(documented) -> None:
    federation, _, nodes = documented
    table = refusals()
    assert set(table) == {*nodes, PLAINTEXT_FLWR}, f"{REFUSED} and this test's cases differ"
    superlink = federation.log("superlink.log")
    for who, node in nodes.items():
        status = federation.nodes[node].wait(timeout=120)
        said = federation.log(f"node-{node}.log")
        assert status == table[who].status, f"{who}: exit status {status}\n{said[-2000:]}"
        for line in table[who].lines:
            assert line.search(said) or line.search(superlink), f"{who}: no {line.pattern}"
    listed = federation.shell("flwr ls plain")
    assert listed.returncode == table[PLAINTEXT_FLWR].status
    for line in table[PLAINTEXT_FLWR].lines:
        assert line.search(listed.stdout + listed.stderr), listed.stdout + listed.stderr


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
