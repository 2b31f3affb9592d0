"""A benchmark's federated run through ``flwr run``, kept on disk so that a benchmark resumes."""

from __future__ import annotations

import json
from pathlib import Path

from simulation.flower_cli import FlowerCli


def _flwr_value(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def run_rounds(
    cli: FlowerCli, runs: Path, name: str, config: dict, clients: int, timeout: float = 1800
) -> list[dict]:
    """The per-round records of run ``name``: read from ``runs/name`` or run first."""
    saved = runs / name / "summary.json"
    if not saved.is_file():
        config = {**config, "output-dir": str(runs), "run-name": name}
        text = " ".join(f"{k}={_flwr_value(v)}" for k, v in config.items())
        proc = cli.run(text, num_supernodes=clients, timeout=timeout)
        if proc.returncode != 0 or not saved.is_file():
            raise RuntimeError(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    lines = (runs / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def per_client(rounds: list[dict], key: str) -> list[float]:
    """Per trained round, the mean over its clients of ``key`` (bytes_up, bytes_down, ...)."""
    return [sum(c[key] for c in r["clients"]) / len(r["clients"]) for r in rounds[1:]]
