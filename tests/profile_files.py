"""Device profile files for tests: devices that differ in memory alone."""

from __future__ import annotations

from pathlib import Path


def write_profiles(path: Path, memory_gb: dict[str, float], *, latency_ms: float = 20) -> Path:
    """A profiles TOML with one always-online, never-failing device per name, with that memory
    (GB), 20 GFLOP/s, 10 Mbit/s up and 50 down."""
    path.write_text(
        "".join(
            f"[profiles.{name}]\nmemory-gb = {gb}\ngflops = 20\nuplink-mbps = 10\n"
            f"downlink-mbps = 50\nlatency-ms = {latency_ms}\navailability = 1\nfailure-rate = 0\n"
            for name, gb in memory_gb.items()
        )
    )
    return path
