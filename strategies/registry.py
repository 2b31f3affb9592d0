"""Strategies by the name the run config uses (``strategy.name``)."""

from __future__ import annotations

from strategies.fedavg import FedAvgLora
from strategies.lora_strategy import LoraStrategy

STRATEGIES: dict[str, type[LoraStrategy]] = {}


def register(cls: type[LoraStrategy]) -> type[LoraStrategy]:
    if cls.name in STRATEGIES:
        raise ValueError(f"strategy name '{cls.name}' is registered twice")
    STRATEGIES[cls.name] = cls
    return cls


register(FedAvgLora)
