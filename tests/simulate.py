"""Run the real apps through Flower's simulation engine from a test, with a given run config."""

from __future__ import annotations

import json
import os
from pathlib import Path

from flwr.simulation import run_simulation

from tests.simulation_apps import CONFIG_ENV, CORRUPT_ENV, DROP_ENV, FLAKY_ENV

ROOT = Path(__file__).resolve().parents[1]


def app_env(
    config: dict,
    corrupt: dict[str, dict[int, str]] | None = None,
    drop_out: bool = False,
    flaky: tuple[float, float] | None = None,
) -> dict[str, str]:
    """The environment the test apps read their run config and faults from (Ray's workers
    inherit it from the driver, or from ``ray start`` on a cluster)."""
    return {
        CONFIG_ENV: json.dumps(config),
        CORRUPT_ENV: json.dumps(corrupt or {}),
        FLAKY_ENV: json.dumps({"share": flaky[0], "hang_seconds": flaky[1]} if flaky else {}),
        DROP_ENV: "1" if drop_out else "0",
        "PYTHONPATH": str(ROOT),  # Ray's workers import tests.simulation_apps
    }


def simulate(
    config: dict,
    num_clients: int,
    *,
    corrupt: dict[str, dict[int, str]] | None = None,
    drop_out: bool = False,
    flaky: tuple[float, float] | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """Run to the end and return the run's results folder (``output-dir/run-name``).

    ``corrupt`` maps a message type ("train", "evaluate") to {partition: how its reply is
    corrupted} (``tests.bad_replies``); ``flaky`` = (share, hang seconds) makes that share of
    training messages fail or hang; ``env`` adds environment variables for the run."""
    env = {**(env or {}), **app_env(config, corrupt, drop_out, flaky)}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        from tests.simulation_apps import client, server

        run_simulation(
            server,
            client,
            num_supernodes=num_clients,
            backend_config={"client_resources": {"num_cpus": 1}},
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Path(config["output-dir"]) / config["run-name"]
