"""A real deployment on loopback for tests: ``flower-superlink``, ``flwr supernode register``,
``flower-supernode`` and ``fedtune run`` processes, started from the command lines that
``fedtune commands`` prints (each through ``bash``, as pasted, from the deployment's folder), in
a Flower home of their own, and stopped at the end."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
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
    device_command,
    superlink_command,
)
from federated.deploy.node_keys import make_node_key
from federated.deploy.shell_line import shell_line


class LocalDeployment:
    """A SuperLink with TLS, node authentication (unless ``authenticate`` is False) and a
    database, and its SuperNodes, on 127.0.0.1. With ``made``, its certificates, keys and the
    Flower home's connection are the caller's to make (as docs/deploy.md makes them)."""

    def __init__(
        self,
        folder: Path,
        nodes: int,
        authenticate: bool = True,
        made: Deployment | None = None,
    ) -> None:
        self.folder = folder
        self.home = folder / "flwr-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.deployment = made or self._make(nodes, authenticate)
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(self.home),
            "HF_HUB_OFFLINE": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FEDTUNE_STATE_DIR": str(folder / "node-state"),
        }
        self.superlink: subprocess.Popen | None = None
        self.nodes: dict[int, subprocess.Popen] = {}

    def _make(self, nodes: int, authenticate: bool) -> Deployment:
        certs, keys = self.folder / "certs", self.folder / "keys" if authenticate else None
        make_certificates(certs, ["127.0.0.1", "localhost"])
        deployment = Deployment(
            f"127.0.0.1:{free_port()}", nodes, certs, keys, self.folder / "superlink.db"
        )
        for node in range(nodes if authenticate else 0):
            make_node_key(deployment.node_key(node))
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n{connection_toml(deployment)}\n'
        )
        return deployment

    def _start(self, command: str, log: str) -> subprocess.Popen:
        """``command`` as pasted into a shell, in a process group of its own (``kill``)."""
        out = (self.folder / log).open("ab")
        return subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.folder,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def shell(self, command: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """``command`` as pasted into a shell, from the deployment's folder, to its end."""
        return subprocess.run(
            ["bash", "-c", command],
            cwd=cwd or self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start_superlink(self, command: str | None = None) -> None:
        """The SuperLink, from ``fedtune commands``' line, or ``command``."""
        line = command or superlink_command(self.deployment)
        self.superlink = self._start(line, "superlink.log")
        self._wait_until_listening()

    def _wait_until_listening(self, timeout: float = 60) -> None:
        """Its HTTP API up before anyone calls it: uvicorn listens once the app has started."""
        host, _, port = self.deployment.address.rpartition(":")
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                assert self.superlink.poll() is None, self.log("superlink.log")[-2000:]
                assert time.monotonic() < deadline, "the SuperLink never listened"
                time.sleep(0.1)

    def register(self, node: int) -> subprocess.CompletedProcess:
        public = self.deployment.node_key(node).with_suffix(".key.pub")
        return self.flwr("supernode", "register", str(public), CONNECTION)

    def start_node(self, node: int, command: str | None = None) -> subprocess.Popen:
        """Device ``node``: ``fedtune commands``' line, or ``command``, its SuperNode's own port
        a free one (the printed 9094 + i may be taken on a shared machine)."""
        line = command or device_command(self.deployment, node)
        proc = self._start(f"{line} --port {free_port()}", f"node-{node}.log")
        self.nodes[node] = proc
        return proc

    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "flwr"), *args],
            cwd=self.folder,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run(self, run_config: str, line: str | None = None) -> subprocess.Popen:
        """``fedtune run`` of the app on this deployment (or ``line``, the printed one, from
        the app folder), with ``run_config`` added, started (wait on it, or kill)."""
        command = line or shell_line(["fedtune", "run", ROOT, CONNECTION])
        out = (self.folder / "run.log").open("ab")
        return subprocess.Popen(
            ["bash", "-c", f"{command} --run-config {shlex.quote(run_config)}"],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def log(self, name: str) -> str:
        path = self.folder / name
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def kill(proc: subprocess.Popen | None) -> None:
        """``proc`` and what it started: its children (a SuperLink's SuperExec runs in a
        session of its own), its process group (the shell, the SuperNode it ran, their
        children), and the helpers that outlive a SuperNode that exited (Flower's SuperExec
        watches its parent by ``--parent-pid``)."""
        if proc is None:
            return
        if proc.poll() is None:
            try:
                for child in psutil.Process(proc.pid).children(recursive=True):
                    child.kill()
            except psutil.NoSuchProcess:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        marker = str(proc.pid)
        for other in psutil.process_iter(["cmdline"]):
            cmdline = other.info["cmdline"] or []
            if "--parent-pid" in cmdline and marker in cmdline:
                other.kill()
        if proc.poll() is None:  # started outside a session of its own: not in that group
            proc.kill()
        proc.wait(timeout=30)

    def close(self) -> None:
        for proc in self.nodes.values():
            self.kill(proc)
        self.kill(self.superlink)
