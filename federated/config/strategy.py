"""The strategy section: which aggregation, how many clients a round, its own options."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class StrategySettings:
    name: str = option(
        "fedavg",
        "Aggregation strategy; see docs/strategies.md.",
        choices=(
            "fedavg",
            "ffa-lora",
            "fedsa-lora",
            "flora",
            "fedex-lora",
            "flexlora",
            "lora-fair",
            "hetlora",
            "fedkseed",
        ),
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
    lora_fair_lambda: float = option(
        0.01,
        "lora-fair: weight of the penalty that keeps the corrected B near the mean B.",
        minimum=0.0,
    )
    lora_fair_solver: str = option(
        "iterative",
        "lora-fair: iterative (the paper's objective, first-order steps) or closed-form "
        "(the ridge least-squares solution of the same problem).",
        choices=("iterative", "closed-form"),
    )
    lora_fair_steps: int = option(200, "lora-fair: steps of the iterative solver.", minimum=1)
