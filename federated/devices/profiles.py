"""Device profiles: what one kind of device gives a federated client, read from TOML.

fedtune ships presets (``presets.toml``, every number with its source); users add or
override profiles in a file of their own with the same layout::

    [profiles.my-board]
    description = "..."
    memory-gb = 3.5
    gflops = 25.0
    uplink-mbps = 20.0
    downlink-mbps = 100.0
    latency-ms = 20.0
    availability = 0.8
    failure-rate = 0.02
    daily-pattern = [...]   # optional: 24 hourly multipliers of availability

A profile in the user's file replaces the preset of the same name whole.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRESETS_FILE = Path(__file__).with_name("presets.toml")

_NUMBERS = {
    "memory-gb": "memory available to the training job, GB",
    "gflops": "sustained throughput the job gets, GFLOP/s",
    "uplink-mbps": "uplink bandwidth, Mbit/s",
    "downlink-mbps": "downlink bandwidth, Mbit/s",
    "latency-ms": "one-way latency to the server, ms",
    "availability": "probability of being online in a round",
    "failure-rate": "probability of failing in the middle of a round",
}
_PROBABILITIES = ("availability", "failure-rate")
_OPTIONAL = ("description", "daily-pattern", "sources")


class ProfileError(ValueError):
    """A profile file or entry that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of device, in SI units: bytes, FLOP/s, bit/s, seconds."""

    name: str
    description: str
    memory_bytes: float
    flops: float
    uplink_bps: float
    downlink_bps: float
    latency_s: float
    availability: float
    failure_rate: float
    daily_pattern: tuple[float, ...] | None = None

    def availability_at(self, hour: int) -> float:
        """The chance of being online at this local hour (the pattern scales the base rate)."""
        if self.daily_pattern is None:
            return self.availability
        return min(1.0, self.availability * self.daily_pattern[hour % 24])


def _profile(name: str, entry: Mapping[str, Any], where: str) -> DeviceProfile:
    unknown = sorted(set(entry) - set(_NUMBERS) - set(_OPTIONAL))
    if unknown:
        raise ProfileError(f"{where}: profile {name!r} has unknown keys {unknown}")
    values = {}
    for key, meaning in _NUMBERS.items():
        value = entry.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProfileError(f"{where}: profile {name!r} needs '{key}' ({meaning}), a number")
        if not math.isfinite(value) or value < 0 or (key == "gflops" and value == 0):
            raise ProfileError(f"{where}: profile {name!r} has '{key}' = {value!r}")
        if key in _PROBABILITIES and value > 1:
            raise ProfileError(f"{where}: profile {name!r} has '{key}' = {value!r}, above 1")
        values[key] = float(value)
    pattern = entry.get("daily-pattern")
    if pattern is not None and (
        not isinstance(pattern, list)
        or len(pattern) != 24
        or not all(isinstance(v, int | float) and 0 <= v < math.inf for v in pattern)
    ):
        raise ProfileError(
            f"{where}: profile {name!r} has a 'daily-pattern' that is not 24 numbers >= 0"
        )
    mbit = 1e6
    return DeviceProfile(
        name=name,
        description=str(entry.get("description", "")),
        memory_bytes=values["memory-gb"] * 1e9,
        flops=values["gflops"] * 1e9,
        uplink_bps=values["uplink-mbps"] * mbit,
        downlink_bps=values["downlink-mbps"] * mbit,
        latency_s=values["latency-ms"] / 1e3,
        availability=values["availability"],
        failure_rate=values["failure-rate"],
        daily_pattern=tuple(float(v) for v in pattern) if pattern is not None else None,
    )


def read_profiles(path: Path) -> dict[str, DeviceProfile]:
    """The profiles of one TOML file."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ProfileError(f"{path}: {err}") from None
    tables = data.get("profiles")
    if not isinstance(tables, dict) or not tables or set(data) != {"profiles"}:
        raise ProfileError(f"{path}: expected [profiles.<name>] tables and nothing else")
    out = {}
    for name, entry in tables.items():
        if not isinstance(entry, dict):
            raise ProfileError(f"{path}: 'profiles.{name}' is not a table")
        out[name] = _profile(name, entry, str(path))
    return out


def load_profiles(user_file: str | Path | None = None) -> dict[str, DeviceProfile]:
    """The presets, with the user's file (if any) adding profiles or replacing them."""
    profiles = read_profiles(PRESETS_FILE)
    if user_file:
        profiles.update(read_profiles(Path(user_file).expanduser()))
    return profiles
