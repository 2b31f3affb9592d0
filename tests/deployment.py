"""A real deployment on loopback for tests: ``flower-superlink``, ``flwr supernode register``,
``flower-supernode`` and ``fedtune run`` processes, started from the command lines that
``fedtune commands`` prints, in a Flower home of their own, and stopped at the end."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import psutil

from federated.cli.flower_cli import BIN, ROOT, free_port
from federated.deploy.certificates import make_certificates
from federated.deploy.commands import (
    CONNECTION,
    Deployment,
    connection_toml,
    superlink_command,
    supernode_command,
)
from federated.deploy.node_keys import make_node_key


class LocalDeployment:
    """A SuperLink with TLS, node authentication (unless ``authenticate`` is False) and a
    database, and its SuperNodes, on 127.0.0.1."""

    def __init__(self, folder: Path, nodes: int, authenticate: bool = True) -> None:
        self.folder = folder
        certs, keys = folder / "certs", folder / "keys" if authenticate else None
        make_certificates(certs, ["127.0.0.1", "localhost"])
        self.deployment = Deployment(
            f"127.0.0.1:{free_port()}", nodes, certs, keys, folder / "superlink.db"
        )
        for node in range(nodes if authenticate else 0):
            make_node_key(self.deployment.node_key(node))
        home = folder / "flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n{connection_toml(self.deployment)}\n'
        )
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FEDTUNE_STATE_DIR": str(folder / "node-state"),
        }
        self.superlink: subprocess.Popen | None = None
        self.nodes: dict[int, subprocess.Popen] = {}

    def _start(self, command: str, log: str) -> subprocess.Popen:
        out = (self.folder / log).open("ab")
        return subprocess.Popen(
            shlex.split(command), cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )

    def start_superlink(self) -> None:
        self.superlink = self._start(superlink_command(self.deployment), "superlink.log")
        time.sleep(3)  # its HTTP API up before anyone calls it

    def register(self, node: int) -> subprocess.CompletedProcess:
        public = self.deployment.node_key(node).with_suffix(".key.pub")
        return self.flwr("supernode", "register", str(public), CONNECTION)

    def start_node(self, node: int, command: str | None = None) -> subprocess.Popen:
        """SuperNode ``node`` (from ``fedtune commands``' line, or ``command``)."""
        line = command or supernode_command(self.deployment, node, self.deployment.nodes)
        proc = self._start(f"{line} --port {free_port()}", f"node-{node}.log")
        self.nodes[node] = proc
        return proc

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "flwr"), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run(self, run_config: str, timeout: float = 900) -> subprocess.Popen:
        """``fedtune run`` of the app on this deployment, started (wait on it, or kill)."""
        command = [str(BIN / "fedtune"), "run", str(ROOT), CONNECTION, "--run-config", run_config]
        out = (self.folder / "run.log").open("ab")
        return subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def kill(proc: subprocess.Popen | None) -> None:
        """``proc`` and what it started, also the helpers that outlive a SuperNode that exited
        (Flower's SuperExec watches its parent by ``--parent-pid``)."""
        if proc is None:
            return
        marker = str(proc.pid)
        for other in psutil.process_iter(["cmdline"]):
            cmdline = other.info["cmdline"] or []
            if "--parent-pid" in cmdline and marker in cmdline:
                other.kill()
        if proc.poll() is not None:
            return
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
        except psutil.NoSuchProcess:
            pass
        proc.kill()
        proc.wait(timeout=30)

    def close(self) -> None:
        for proc in self.nodes.values():
            self.kill(proc)
        self.kill(self.superlink)
