"""Run the app with ``fedtune run`` (Flower's ``flwr run``) against a private local SuperLink.

Tests and benchmarks get their own Flower home and ports, so they neither reuse a SuperLink a user
left running (with another working directory and environment) nor leave one behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]  # the app folder: federated/cli/ is two below
BIN = Path(sys.executable).parent


def run_config_text(values: dict[str, object]) -> str:
    """Run config values as ``--run-config`` parses them (TOML): quoted strings, lower-case
    booleans."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return f"'{v}'" if isinstance(v, str) else str(v)

    return " ".join(f"{k}={value(v)}" for k, v in values.items())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FlowerCli:
    """``fedtune run .`` with an isolated Flower home; ``close`` stops the SuperLink it started."""

    def __init__(self, home: Path) -> None:
        self.http_port = free_port()
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "FLWR_HOME": str(home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(self.http_port),
            "FLWR_LOCAL_CONTROL_API_PORT": str(free_port()),
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "HF_HUB_OFFLINE": "1",
        }

    def command(self, run_config: str, num_supernodes: int, app: Path = ROOT) -> list[str]:
        """``fedtune run`` (``flwr run --stream``, exiting with the run's status)."""
        return [
            str(BIN / "fedtune"),
            "run",
            str(app),
            "--run-config",
            run_config,
            "--federation-config",
            f"num-supernodes={num_supernodes} client-resources-num-cpus=1",
        ]

    def run(
        self, run_config: str, num_supernodes: int, timeout: float = 600, app: Path = ROOT
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(run_config, num_supernodes, app),
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def close(self) -> None:
        marker = str(self.http_port)
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if "flower-superlink" in " ".join(cmdline) and marker in cmdline:
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()
