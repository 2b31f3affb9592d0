"""Which device profile each simulated client runs on, for the whole run.

``simulation.population`` is either a mix (``phone-low:0.5,pi5:0.3,laptop:0.2``: shares of the
clients, normalised) or a CSV file of ``partition-id,profile`` rows naming each client's device.
A mix becomes exact counts (largest remainders), dealt to partitions in an order drawn from the
run seed: the same seed binds the same partition to the same device, launch after launch.
"""

from __future__ import annotations

import csv
import difflib
import random
from collections.abc import Mapping
from pathlib import Path

from federated.devices.profiles import DeviceProfile, ProfileError


def _known(name: str, profiles: Mapping[str, DeviceProfile], where: str) -> str:
    if name in profiles:
        return name
    close = difflib.get_close_matches(name, profiles, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(profiles))}"
    raise ProfileError(f"{where}: no device profile {name!r}{hint}")


def parse_mix(spec: str, profiles: Mapping[str, DeviceProfile]) -> dict[str, float]:
    """``name:share,...`` as shares that sum to 1."""
    shares: dict[str, float] = {}
    for part in spec.split(","):
        name, sep, share = part.strip().partition(":")
        name = _known(name.strip(), profiles, "simulation.population")
        try:
            value = float(share) if sep else 1.0
        except ValueError:
            raise ProfileError(
                f"simulation.population: {part.strip()!r} is not name:share"
            ) from None
        if not value > 0 or value == float("inf"):
            raise ProfileError(f"simulation.population: the share of {name!r} must be > 0")
        shares[name] = shares.get(name, 0.0) + value
    total = sum(shares.values())
    return {name: share / total for name, share in shares.items()}


def deal(shares: Mapping[str, float], num_clients: int, seed: int) -> list[str]:
    """Each client's profile: the shares as exact counts (largest remainders), in an order
    drawn from ``seed``."""
    exact = {name: share * num_clients for name, share in shares.items()}
    counts = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda n: (counts[n] - exact[n], n))
    for name in by_remainder[: num_clients - sum(counts.values())]:
        counts[name] += 1
    dealt = [name for name in sorted(counts) for _ in range(counts[name])]
    random.Random(f"{seed}/population").shuffle(dealt)
    return dealt


def read_assignment(
    path: Path, profiles: Mapping[str, DeviceProfile], num_clients: int
) -> list[str]:
    """A CSV file of ``partition-id,profile`` rows, one for every client."""
    try:
        rows = list(csv.reader(path.read_text().splitlines()))
    except (OSError, UnicodeDecodeError) as err:
        raise ProfileError(f"simulation.population file {path}: {err}") from None
    named: dict[int, str] = {}
    for line, row in enumerate(rows, start=1):
        if not row or row[0].strip() in ("", "partition-id"):
            continue
        where = f"{path}, line {line}"
        if len(row) != 2 or not row[0].strip().isdigit():
            raise ProfileError(f"{where}: expected 'partition-id,profile'")
        named[int(row[0])] = _known(row[1].strip(), profiles, where)
    missing = sorted(set(range(num_clients)) - set(named))
    if missing:
        raise ProfileError(f"{path}: no profile for partitions {missing[:5]}")
    return [named[p] for p in range(num_clients)]


def population(
    spec: str, profiles: Mapping[str, DeviceProfile], num_clients: int, seed: int
) -> list[DeviceProfile]:
    """The profile of each of ``num_clients`` partitions, by partition."""
    if spec.endswith(".csv"):
        names = read_assignment(Path(spec).expanduser(), profiles, num_clients)
    else:
        names = deal(parse_mix(spec, profiles), num_clients, seed)
    return [profiles[name] for name in names]
