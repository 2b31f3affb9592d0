"""Walking the schema: flat keys to frozen dataclasses and back, each value checked."""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from federated.config.checks import check_combinations, check_mechanism_options
from federated.config.dp_defaults import auto_values, auto_values_line
from federated.config.options import ConfigError, Entries
from federated.config.privacy import REPLACED_SWITCHES
from federated.config.run_config import RunConfig
from federated.config.strategy import MOVED_OPTIONS

# Keys the schema once had: a config that still sets one is told what to set instead.
REPLACED_KEYS = {**REPLACED_SWITCHES, **MOVED_OPTIONS}


def _key(prefix: str, f: dataclasses.Field) -> str:
    return prefix + (f.metadata.get("key") or f.name.replace("_", "-"))


def _is_entries(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("entries"))


def _is_entry(key: str, prefix: str) -> bool:
    """Whether ``key`` is one of the entries (``options.entries``) of the section at ``prefix``."""
    return key.startswith(prefix) and key.removeprefix(prefix).count(".") == 1


def _walk(cls: type, prefix: str) -> list[tuple[str, dataclasses.Field]]:
    """Every leaf option as (flat key, field), and every entries field as (its section's prefix,
    field), in declaration order."""
    found: list[tuple[str, dataclasses.Field]] = []
    for f in dataclasses.fields(cls):
        if _is_entries(f):
            found.append((prefix, f))
        elif f.default is dataclasses.MISSING:  # a section: built by its default_factory
            found += _walk(f.default_factory, _key(prefix, f) + ".")
        else:
            found.append((_key(prefix, f), f))
    return found


def iter_options(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every leaf option as (flat key, field), in declaration order."""
    return [(key, f) for key, f in _walk(cls, prefix) if not _is_entries(f)]


def default_flat_config() -> dict[str, Any]:
    """The defaults as Flower's flat run config (what pyproject's app config must hold)."""
    return {key: f.default for key, f in iter_options()}


def _check_value(key: str, f: dataclasses.Field, value: Any) -> Any:
    expected = type(f.default)
    meta = f.metadata
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        raise ConfigError(
            f"run config '{key}' = {value!r}: expected {expected.__name__}, "
            f"got {type(value).__name__}"
        )
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"run config '{key}' = {value!r}: must be a finite number")
    if meta["choices"] is not None and value not in meta["choices"]:
        allowed = ", ".join(map(str, meta["choices"]))
        raise ConfigError(f"run config '{key}' = {value!r}: allowed values are {allowed}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise ConfigError(f"run config '{key}' = {value!r}: must be >= {meta['minimum']}")
    if meta["maximum"] is not None and value > meta["maximum"]:
        raise ConfigError(f"run config '{key}' = {value!r}: must be <= {meta['maximum']}")
    if meta["above"] is not None and value <= meta["above"]:
        raise ConfigError(f"run config '{key}' = {value!r}: must be > {meta['above']}")
    return value


def build_section(cls: type, prefix: str, flat: Mapping[str, Any]) -> Any:
    """``cls``, the whole config or a section of options, from the keys of ``flat`` under
    ``prefix``, each value checked against its option; an option ``flat`` lacks keeps its
    default, and keys no option of ``cls`` has are left to the caller."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = _key(prefix, f)
        if _is_entries(f):
            kwargs[f.name] = Entries({k: v for k, v in flat.items() if _is_entry(k, prefix)})
        elif f.default is dataclasses.MISSING:
            kwargs[f.name] = build_section(f.default_factory, key + ".", flat)
        elif key in flat:
            kwargs[f.name] = _check_value(key, f, flat[key])
    return cls(**kwargs)


def unknown_key(key: str, known: Iterable[str]) -> ConfigError:
    """The error for a key that is none of ``known``, with the one it most likely meant: the
    same option in another section, else the closest spelling."""
    known = sorted(known)
    close = [k for k in known if k.split(".")[-1] == key.split(".")[-1]]
    close = close or difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"run config has unknown key '{key}'{hint}")


def _given(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every key of the run config, each value checked, auto values not yet resolved."""
    known = {key for key, _ in iter_options()}
    sections = [prefix for prefix, f in _walk(RunConfig, "") if _is_entries(f)]
    for key in raw:
        if key in REPLACED_KEYS:
            raise ConfigError(f"run config key '{key}' is gone: {REPLACED_KEYS[key]}")
        if key not in known and not any(_is_entry(key, prefix) for prefix in sections):
            raise unknown_key(key, known)
    return run_config_to_flat(build_section(RunConfig, "", raw))


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a flat run config (Flower's ``context.run_config``) into a frozen ``RunConfig``,
    its auto values resolved (``federated.config.dp_defaults``).

    Raises
    ------
    ConfigError
        One line naming the key, the value and what is allowed.
    """
    given, defaults = _given(raw), default_flat_config()
    check_mechanism_options(given, defaults)
    config = build_section(RunConfig, "", {**given, **auto_values(given, defaults)})
    check_combinations(config)
    return config


def auto_settings_line(raw: Mapping[str, Any]) -> str | None:
    """The line a run logs at start for the auto values of its run config (valid, as
    ``parse_run_config`` accepts it) that take the privacy sweep's settings; None when none do."""
    return auto_values_line(_given(raw), default_flat_config())


def run_config_to_flat(config: RunConfig) -> dict[str, Any]:
    """The flat form of a parsed config, for summaries and for the config sent to clients."""
    flat: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if _is_entries(f):
                flat.update(value)
            elif dataclasses.is_dataclass(value):
                walk(value, _key(prefix, f) + ".")
            else:
                flat[_key(prefix, f)] = value

    walk(config, "")
    return flat
