"""The ``fedtune`` chores: certificates that verify against their CA and name the SuperLink's
hosts, node keys in the format Flower reads, the deployment's command lines (and docs/deploy.md
showing exactly them), a run's report, several ``--run-config`` options merged as one, and one
clear line for each bad argument."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key
from flwr.common.config import parse_config_args

from federated.checkpoint import CHECKPOINT_INFO
from federated.cli.main import main
from federated.cli.run_config_merge import merge_run_configs
from federated.deploy.certificates import make_certificates
from federated.deploy.commands import Deployment, deployment_commands
from federated.deploy.node_keys import make_node_key
from federated.protocol.partition_keys import fingerprint, read_partition_keys
from federated.results import RunResults
from tests.deploy_doc import fenced_bash, on_this_machine


def test_the_superlink_certificate_is_signed_by_the_ca_for_every_host(tmp_path: Path) -> None:
    files = make_certificates(tmp_path, ["fl.example.org", "10.0.0.5", "::1"])
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    ca.public_key().verify(
        server.signature, server.tbs_certificate_bytes, ec.ECDSA(server.signature_hash_algorithm)
    )
    assert server.issuer == ca.subject
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["fl.example.org"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.5"),
        ipaddress.ip_address("::1"),
    ]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError, match="never overwritten"):
        make_certificates(tmp_path, ["fl.example.org"])


@pytest.mark.parametrize("host", ["bad host", "-x.org", "a..b", ""])
def test_a_bad_host_name_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ValueError, match="neither an IP address nor a valid host name"):
        make_certificates(tmp_path, [host])
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_node_key_is_an_openssh_nist_ec_pair(tmp_path: Path) -> None:
    private, public = make_node_key(tmp_path / "keys" / "node-0.key")
    key = load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    loaded = load_ssh_public_key(public.read_bytes())
    assert loaded.public_numbers() == key.public_key().public_numbers()
    signature = key.sign(b"hello", ec.ECDSA(hashes.SHA256()))
    loaded.verify(signature, b"hello", ec.ECDSA(hashes.SHA256()))
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        make_node_key(private)


def test_the_commands_of_a_secure_deployment() -> None:
    d = Deployment("fl.example.org:8000", 2, Path("certs"), Path("keys"), Path("state.db"))
    text = deployment_commands(d)
    assert (
        "flower-superlink --host 0.0.0.0 --port 8000 --ssl-ca-certfile certs/ca.crt "
        "--ssl-certfile certs/server.pem --ssl-keyfile certs/server.key "
        "--enable-supernode-auth --database state.db"
    ) in text
    assert "flwr supernode register keys/node-1.key.pub fedtune" in text
    assert (
        "fedtune check-link --superlink fl.example.org:8000 --root-certificates certs/ca.crt && "
        "flower-supernode --superlink fl.example.org:8000 --root-certificates certs/ca.crt "
        "--auth-supernode-private-key keys/node-1.key --port 9095 "
        "--node-config 'partition-id=1 num-partitions=2'"
    ) in text
    # flwr refuses a relative certificate path in its connection (it reads it from any folder).
    ca = Path("certs/ca.crt").absolute()
    assert f'root-certificates = "{ca}"' in text and "--insecure" not in text
    table = Path("keys/partition-keys.json").absolute()
    assert f"fedtune run . fedtune --run-config \"server.partition-keys='{table}'\"" in text


def test_commands_with_keys_write_the_table_the_run_line_names(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    publics = [make_node_key(tmp_path / "keys" / f"node-{i}.key")[1] for i in range(2)]
    make_certificates(tmp_path / "certs", ["127.0.0.1"])
    args = [
        "commands",
        "--address",
        "127.0.0.1:9000",
        "--nodes",
        "2",
        "--certs",
        "certs",
        "--keys",
        "keys",
    ]
    assert main(args) == 0
    table = tmp_path / "keys" / "partition-keys.json"
    assert f"# wrote {table}" in capsys.readouterr().out
    bound = read_partition_keys(str(table))
    assert bound == {i: fingerprint(key.read_bytes()) for i, key in enumerate(publics)}


def test_the_deployment_guide_shows_what_fedtune_commands_prints(tmp_path, capsys, monkeypatch):
    """docs/deploy.md's section 2, as its own lines make it on one machine (the end-to-end test
    then runs those lines)."""
    monkeypatch.chdir(tmp_path)
    command, shown = (
        on_this_machine(b, tmp_path, 8000) for b in fenced_bash("## 2. The command lines")
    )
    args = command.split()
    nodes = int(args[args.index("--nodes") + 1])
    for node in range(nodes):
        make_node_key(tmp_path / "keys" / f"node-{node}.key")
    assert args[:1] == ["fedtune"] and main(args[1:]) == 0
    assert capsys.readouterr().out == shown


def test_several_run_configs_reach_flwr_as_one_that_keeps_every_key() -> None:
    printed = "server.partition-keys='/srv/keys table.json' num-server-rounds=3"
    mine = "server.round-timeout=60.0 num-server-rounds=20"
    options = ["--run-config", printed, "--federation-config", "num-supernodes=2", "-c", mine]
    merged = merge_run_configs(options)
    assert merged[:2] == ["--federation-config", "num-supernodes=2"]
    assert merged[2] == "--run-config"
    assert parse_config_args(merged[3:]) == {
        "server.partition-keys": "/srv/keys table.json",
        "server.round-timeout": 60.0,
        "num-server-rounds": 20,
    }
    # What flwr run alone does with the two: the later server.* drops the earlier.
    assert "server.partition-keys" not in parse_config_args([printed, mine])
    assert merge_run_configs(["--run-config", printed]) == ["--run-config", printed]


def test_a_plaintext_deployment_says_insecure_everywhere() -> None:
    text = deployment_commands(Deployment("127.0.0.1:9000", 1, None, None, None))
    assert text.count("--insecure") == 3 and "insecure = true" in text  # SuperLink, check, node
    assert "register" not in text and "--database" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["commands", "--address", "nohost", "--nodes", "2"], "is not HOST:PORT"),
        (["commands", "--address", "h:1", "--nodes", "0"], "at least 1"),
        (["commands", "--address", "h:1", "--nodes", "1", "--keys", "k"], "needs TLS"),
        (["certs", "--host", "a b"], "neither an IP address"),
        (["certs", "--host", "x.org", "--days", "0"], "--days must be at least 1"),
        (["results", "/nonexistent/run"], "not a run folder"),
        (["check-link", "--superlink", "nohost", "--insecure"], "is not HOST:PORT"),
        (
            ["check-link", "--superlink", "h:1", "--root-certificates", "/nonexistent/ca.crt"],
            "cannot read the root certificates /nonexistent/ca.crt",
        ),
    ],
)
def test_a_bad_argument_gets_one_line_and_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith(f"fedtune {args[0]}:") and "\n" not in err


def test_results_of_a_finished_and_an_unfinished_run(tmp_path: Path, capsys) -> None:
    done = RunResults.create(tmp_path / "done")
    done.append_round({"round": 0, "test_loss": 3.5})
    done.append_round({"round": 1, "test_loss": 2.5})
    done.write_summary(
        {
            "run_name": "done",
            "config": {
                "model.name": "tiny-llama",
                "data.name": "chatterbot",
                "mode": "lora",
                "strategy.name": "fedavg",
            },
            "rounds": 1,
            "initial_test": {"test_loss": 3.5},
            "final_test": {"test_loss": 2.5},
            "bytes_up_total": 2e6,
            "bytes_down_total": 3e6,
            "bytes_up_per_client_round": 5e5,
            "replies_rejected": 1,
            "replies_unreachable": 2,
            "evaluations_lost": 1,
            "wall_seconds": 1128.0,
            "running_seconds": 744.0,
            "resumes": 1,
            "model_files": ["done/adapter"],
            "simulated_hours": 1.5,
            "hours_to_test_loss_3": 0.5,
            "hours_to_test_loss_2": None,
        }
    )
    assert main(["results", str(tmp_path / "done")]) == 0
    out = capsys.readouterr().out
    assert "tiny-llama on chatterbot, mode lora, strategy fedavg, 1 rounds" in out
    assert "test: loss 3.5 -> loss 2.5" in out and "2.00 MB up, 3.00 MB down" in out
    assert "simulated: 1.50 h" in out
    assert (
        "not used: 1 rejected, 0 declined, 0 no reply, 2 unreachable, 0 evaluated only; "
        "evaluations lost 1, rejected 0"
    ) in out
    assert "wall time 18.8 min from the first launch, across 1 resume(s) (12.4 min running)" in out
    assert "test_loss_3: 0.50 h" in out and "test_loss_2: not reached" in out

    stopped = RunResults.create(tmp_path / "stopped")
    stopped.append_round({"round": 0, "test_loss": 3.5})
    stopped.append_round({"round": 1, "test_loss": 2.9})
    (tmp_path / "stopped" / CHECKPOINT_INFO).write_text('{"round": 1}')
    assert main(["results", str(tmp_path / "stopped")]) == 0
    out = capsys.readouterr().out
    assert "not finished (1 rounds recorded" in out and "round 1: loss 2.9" in out
    assert f"checkpoint after round 1: continue with --run-config \"resume='{tmp_path}" in out
