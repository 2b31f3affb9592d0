"""How an option is declared: its default, its help and its allowed values, in one field."""

from __future__ import annotations

from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A run-config key has a value that is not allowed; the message is one line for the user."""


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    key: str | None = None,
) -> Any:
    """A dataclass field that carries its documentation and its allowed range. ``key``: its name
    in the run config, where the field's own (underscores as hyphens) cannot be one (lambda)."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum}
    meta["above"], meta["key"] = above, key
    return field(default=default, metadata=meta)
