"""A benchmark's federated run through ``flwr run``, kept on disk so that a benchmark resumes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from federated.cli.flower_cli import FlowerCli, run_config_text
from federated.results import METRICS_FILE, OPERATOR_FILE


def run_rounds(
    cli: FlowerCli, runs: Path, name: str, config: dict, clients: int, timeout: float = 1800
) -> list[dict]:
    """The per-round records of run ``name``: read from ``runs/name`` or run first."""
    saved = runs / name / "summary.json"
    if not saved.is_file():
        config = {**config, "output-dir": str(runs), "run-name": name}
        proc = cli.run(run_config_text(config), num_supernodes=clients, timeout=timeout)
        if proc.returncode != 0 or not saved.is_file():
            raise RuntimeError(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    # The operator's own record where the run withheld part of it (client-level DP): a
    # benchmark measures what the server saw, bytes and times included.
    record = runs / name / OPERATOR_FILE
    lines = (record if record.is_file() else runs / name / METRICS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def per_client(rounds: list[dict], key: str) -> list[float]:
    """Per trained round, the mean over its clients of ``key`` (bytes_up, bytes_down, ...)."""
    return [sum(c[key] for c in r["clients"]) / len(r["clients"]) for r in rounds[1:]]


def run_all(
    name: str, runs: Path, planned: dict[str, tuple[dict, int]], report: Callable[[list[dict]], str]
) -> dict[str, list[dict]]:
    """Every planned run (name -> (run config, clients)) through one private Flower home; the
    rounds of each, by name. ``report`` says in one line how a finished run ended."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    runs.mkdir(parents=True, exist_ok=True)
    cli = FlowerCli(Path(os.environ.get("TMPDIR", "/tmp")) / f"fedtune-{name}-flwr")
    done = {}
    try:
        for run, (config, clients) in planned.items():
            start = time.perf_counter()
            done[run] = run_rounds(cli, runs, run, config, clients, timeout=3600)
            took = time.perf_counter() - start
            print(f"{run}: {report(done[run])} ({took:.0f} s)", flush=True)
    finally:
        cli.close()
    return done
