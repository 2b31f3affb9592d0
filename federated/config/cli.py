"""``python -m federated.config``: the reference table, pyproject's table, or a check."""

from __future__ import annotations

import argparse

from federated.config.dp_defaults import tuned_dp_defaults, tuned_dp_defaults_line
from federated.config.options import ConfigError
from federated.config.reference import app_config_toml, config_reference_markdown
from federated.config.schema import default_flat_config, parse_run_config


def main(argv: list[str] | None = None) -> int:
    """``python -m federated.config``: print the reference table, or check a ``--run-config``."""
    parser = argparse.ArgumentParser(prog="python -m federated.config", description=main.__doc__)
    parser.add_argument("--check", metavar="RUN_CONFIG", help='e.g. "lora.rank=16 train.lr=5e-4"')
    parser.add_argument("--toml", action="store_true", help="print pyproject's app config table")
    args = parser.parse_args(argv)
    if args.toml:
        print(app_config_toml())
        return 0
    if args.check is None:
        print(config_reference_markdown())
        return 0
    from flwr.common.config import parse_config_args  # Flower's own parser of --run-config

    raw = {**default_flat_config(), **parse_config_args([args.check])}
    try:
        config = parse_run_config(raw)
    except ConfigError as err:
        print(err)
        return 2
    tuned = tuned_dp_defaults(raw, default_flat_config())
    if tuned:
        print(tuned_dp_defaults_line(tuned))
    print(f"ok: {config.model.name} on {config.data.name}, {config.task}, {config.strategy.name}")
    return 0
