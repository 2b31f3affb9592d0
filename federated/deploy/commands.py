"""``fedtune commands``: the exact Flower command lines of a deployment.

One SuperLink (Fleet, Control and Runtime APIs on one HTTP port), one SuperNode per device, the
nodes' keys registered with ``flwr supernode register``, and the run started with ``fedtune
run`` against a named SuperLink connection in the Flower home's ``config.toml``. With keys, the
run binds partition i to node i's key (``server.partition-keys``), from a table written next to
the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from federated.deploy.certificates import CertificateFiles
from federated.deploy.shell_line import shell_line
from federated.protocol.partition_keys import PARTITION_KEYS_FILE, write_partition_keys

CONNECTION = "fedtune"
NODE_PORT = 9094  # flower-supernode's default Runtime API port


@dataclass(frozen=True)
class Deployment:
    """What the command lines depend on."""

    address: str  # host:port at which devices reach the SuperLink
    nodes: int
    certs: Path | None  # fedtune certs' folder; None: plaintext (tests on one machine only)
    keys: Path | None  # fedtune node-key's files node-<i>.key; None: no node authentication
    database: Path | None  # the SuperLink's state file; None: in memory, lost on a restart

    def check(self) -> None:
        host, _, port = self.address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--address {self.address!r} is not HOST:PORT")
        if self.nodes < 1:
            raise ValueError(f"--nodes must be at least 1, got {self.nodes}")
        if self.keys is not None and self.certs is None:
            raise ValueError(
                "node authentication (--keys) needs TLS (--certs): Flower refuses "
                "--enable-supernode-auth with --insecure"
            )

    def node_key(self, node: int) -> Path:
        assert self.keys is not None
        return self.keys / f"node-{node}.key"

    @property
    def partition_keys(self) -> Path | None:
        """The table binding partition i to node-i's key (``write_partition_table``)."""
        return None if self.keys is None else (self.keys / PARTITION_KEYS_FILE).absolute()

    def write_partition_table(self) -> Path | None:
        """Write the table the run line names: partition i -> node-<i>.key.pub's key."""
        if self.partition_keys is None:
            return None
        public = [self.node_key(i).with_suffix(".key.pub") for i in range(self.nodes)]
        return write_partition_keys(self.partition_keys, public)


def _line(*parts: object) -> str:
    return shell_line(parts)


def superlink_command(d: Deployment) -> str:
    port = d.address.rpartition(":")[2]
    parts: list[object] = ["flower-superlink", "--host", "0.0.0.0", "--port", port]
    if d.certs is None:
        parts.append("--insecure")
    else:
        files = CertificateFiles.in_folder(d.certs)
        parts += [
            "--ssl-ca-certfile",
            files.ca_cert,
            "--ssl-certfile",
            files.server_cert,
            "--ssl-keyfile",
            files.server_key,
        ]
    if d.keys is not None:
        parts.append("--enable-supernode-auth")
    if d.database is not None:
        parts += ["--database", d.database]
    return _line(*parts, "--disable-runtime-dependency-installation")


def _trust(d: Deployment) -> list[object]:
    """How a device trusts the SuperLink: its CA certificate, or plaintext."""
    if d.certs is None:
        return ["--insecure"]
    return ["--root-certificates", CertificateFiles.in_folder(d.certs).ca_cert]


def link_check_command(d: Deployment) -> str:
    return _line("fedtune", "check-link", "--superlink", d.address, *_trust(d))


def supernode_command(d: Deployment, node: int, num_partitions: int) -> str:
    parts: list[object] = ["flower-supernode", "--superlink", d.address, *_trust(d)]
    if d.keys is not None:
        parts += ["--auth-supernode-private-key", d.node_key(node)]
    config = f"partition-id={node} num-partitions={num_partitions}"
    # The node's own Runtime API port stays on the device; a port each lets nodes share a machine.
    return _line(*parts, "--port", NODE_PORT + node, "--node-config", config)


def device_command(d: Deployment, node: int) -> str:
    """Device ``node``'s line: the address checked within seconds, then its SuperNode."""
    return f"{link_check_command(d)} && {supernode_command(d, node, d.nodes)}"


def connection_toml(d: Deployment) -> str:
    """The SuperLink connection that ``flwr`` and ``fedtune run`` use, for ``config.toml``."""
    lines = [f"[superlink.{CONNECTION}]", f'address = "{d.address}"']
    if d.certs is None:
        lines.append("insecure = true")
    else:
        # flwr reads the connection from any folder, so it takes an absolute path only.
        ca_cert = CertificateFiles.in_folder(d.certs).ca_cert.absolute()
        lines.append(f'root-certificates = "{ca_cert}"')
    return "\n".join(lines)


def deployment_commands(d: Deployment) -> str:
    """Every command of the deployment, in the order they run, with where each runs."""
    d.check()
    sections = [
        "# On the server: the SuperLink (open this TCP port to the devices)",
        superlink_command(d),
        "",
        "# Where you start runs: add this connection to $FLWR_HOME/config.toml "
        "(default ~/.flwr/config.toml)",
        connection_toml(d),
    ]
    if d.keys is not None:
        sections += ["", "# Register each device's public key (fedtune node-key made them)"]
        sections += [
            _line(
                "flwr", "supernode", "register", d.node_key(i).with_suffix(".key.pub"), CONNECTION
            )
            for i in range(d.nodes)
        ]
    sections += [
        "",
        "# On each device i: the SuperLink's address checked, then its SuperNode "
        "(copy ca.crt and its own key there)",
    ]
    sections += [device_command(d, i) for i in range(d.nodes)]
    run = ["fedtune", "run", ".", CONNECTION]
    if d.partition_keys is not None:
        # The server gives partition i to node i's key alone: another node cannot claim it.
        run += ["--run-config", f"server.partition-keys='{d.partition_keys}'"]
    sections += [
        "",
        "# Start the run from the app folder; it exits 0 only if the run completed",
        _line(*run),
    ]
    return "\n".join(sections)
