"""How an option is declared: its default, its help and its allowed values, in one field."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import field
from typing import Any

Scalar = str | int | float | bool  # what a Flower run-config value can be


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


class Entries(Mapping[str, Scalar]):
    """Run-config entries held as given, read-only and hashable like the frozen sections around
    them (a parsed config keys caches)."""

    def __init__(self, items: Mapping[str, Scalar] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> Scalar:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"Entries({self._items!r})"


def entries() -> Any:
    """A section's field for the keys one level below it (``<section>.<group>.<name>``), passed
    through unchecked for what the config cannot import to check them (a strategy's options,
    which the server checks against its registered strategies). Its section has no sections."""
    return field(default_factory=Entries, metadata={"entries": True})
