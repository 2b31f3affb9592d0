"""The strategy section: which aggregation, and how many clients a round.

A strategy's own options are its own: declared beside it in ``strategies/`` and set as
``strategy.<name>.<option>``. This section passes them through as given (a client parses the run
config and has no strategies to check them against); the server checks them when it builds the
run's strategy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from federated.config.options import Scalar, entries, option

# The keys lora-fair's options had before they moved under its name, and what to set instead.
MOVED_OPTIONS = {
    f"strategy.lora-fair-{name}": f"set strategy.lora-fair.{name}"
    for name in ("lambda", "solver", "steps")
}


@dataclass(frozen=True)
class StrategySettings:
    name: str = option(
        "fedavg",
        "Aggregation strategy, one of those the server registers; see docs/strategies.md, with "
        "each strategy's own options (strategy.NAME.OPTION).",
    )
    fraction_train: float = option(
        1.0, "Share of connected clients sampled to train each round.", above=0.0, maximum=1.0
    )
    fraction_evaluate: float = option(
        1.0,
        "Share of connected clients sampled to evaluate each round (0: none).",
        minimum=0.0,
        maximum=1.0,
    )
    min_train_nodes: int = option(2, "Train with at least this many clients.", minimum=1)
    min_available_nodes: int = option(2, "Wait until this many clients are connected.", minimum=1)
    # strategy.<name>.<option> -> its value, as given.
    options: Mapping[str, Scalar] = entries()
