"""``python -m federated.config``: the reference table, pyproject's table, or a check."""

from __future__ import annotations

import argparse

from federated.config.options import ConfigError
from federated.config.reference import app_config_toml, config_reference_markdown
from federated.config.schema import auto_settings_line, default_flat_config, parse_run_config
from federated.privacy.planned_epsilon import planned_epsilon_line

# Where the check cannot count each client's records, what would let it.
_NO_CLIENTS = "give --clients N to split data.name as a run on N nodes does"


def main(argv: list[str] | None = None) -> int:
    """``python -m federated.config``: print the reference table, or check a ``--run-config``."""
    parser = argparse.ArgumentParser(prog="python -m federated.config", description=main.__doc__)
    parser.add_argument("--check", metavar="RUN_CONFIG", help='e.g. "lora.rank=16 train.lr=5e-4"')
    parser.add_argument(
        "--clients",
        type=int,
        metavar="N",
        help="with --check under record-level DP: the nodes' count, to split the data and state "
        "the epsilon each client spends as the run does at start",
    )
    parser.add_argument(
        "--toml",
        action="store_true",
        help="print pyproject's app config table, but for the strategies' own options (python -m "
        "strategies --toml)",
    )
    args = parser.parse_args(argv)
    if args.clients is not None and args.clients < 1:
        parser.error(f"--clients {args.clients}: must be >= 1")
    if args.toml:
        print(app_config_toml())
        return 0
    if args.check is None:
        print(config_reference_markdown())
        return 0
    from flwr.common.config import parse_config_args  # Flower's own parser of --run-config

    given = parse_config_args([args.check])
    raw = {**default_flat_config(), **given}
    try:
        config = parse_run_config(raw)
    except ConfigError as err:
        print(err)
        return 2
    if auto := auto_settings_line(raw):
        print(auto)
    if config.dp.record_level:
        try:
            print(planned_epsilon_line(config, args.clients, _NO_CLIENTS))
        except ValueError as err:
            print(f"--clients {args.clients}: the data cannot be split across that many: {err}")
            return 2
    print(f"ok: {config.model.name} on {config.data.name}, {config.task}, {config.strategy.name}")
    # The strategies are not federated's to import: their names and options are the server's.
    if left := [key for key in given if key == "strategy.name" or key in config.strategy.options]:
        print(
            f"left to the server: {', '.join(left)}; it checks the strategy and its options "
            "against those it registers when it starts"
        )
    return 0
