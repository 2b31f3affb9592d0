"""A benchmark's run on Flower's simulation engine, kept on disk so that a benchmark resumes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.simulate import simulate


def simulated_rounds(
    runs: Path, name: str, config: dict, clients: int, **simulate_args: Any
) -> list[dict]:
    """The per-round records of run ``name``: read from ``runs/name`` or run first."""
    folder = runs / name
    if not (folder / "summary.json").is_file():
        started = time.perf_counter()
        config = {**config, "output-dir": str(runs), "run-name": name}
        simulate(config, clients, **simulate_args)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
