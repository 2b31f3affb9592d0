"""The strategies' own options as documentation: docs/strategies.md's tables and the lines
pyproject's app config holds for them, generated from each strategy's ``options`` dataclass."""

from __future__ import annotations

import argparse

from federated.config import config_reference_markdown, toml_lines
from strategies.registry import STRATEGIES, option_defaults, options_prefix


def strategy_options_markdown() -> str:
    """docs/strategies.md's table of each strategy's options, one per strategy that has any."""
    return "\n\n".join(
        f"### `{name}`\n\n" + config_reference_markdown(cls.options, options_prefix(name))
        for name, cls in STRATEGIES.items()
        if cls.options is not None
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m strategies``: print the strategies' options as docs/strategies.md lists them."""
    parser = argparse.ArgumentParser(prog="python -m strategies", description=main.__doc__)
    parser.add_argument(
        "--toml", action="store_true", help="print their lines of pyproject's app config table"
    )
    args = parser.parse_args(argv)
    print(toml_lines(option_defaults()) if args.toml else strategy_options_markdown())
    return 0
