"""Device profiles and the population: presets that parse with a source for every number,
user files that add or replace profiles, bad entries named, and a population bound to
partitions by the seed in exact shares."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path

import pytest

from federated.devices.profiles import PRESETS_FILE, ProfileError, load_profiles, read_profiles
from simulation.population import deal, parse_mix, population

PRESET_NAMES = {"phone-low", "phone-high", "pi4", "pi5", "jetson-orin-nano", "laptop"}


def test_every_preset_number_has_its_source() -> None:
    tables = tomllib.loads(PRESETS_FILE.read_text())["profiles"]
    assert set(tables) == PRESET_NAMES
    for name, entry in tables.items():
        numbers = {k for k, v in entry.items() if isinstance(v, int | float | list)}
        assert numbers <= set(entry["sources"]), name
        assert all(len(s) > 10 for s in entry["sources"].values()), name
    profiles = load_profiles()
    assert profiles["pi4"].flops < profiles["pi5"].flops
    assert profiles["phone-low"].memory_bytes < profiles["phone-high"].memory_bytes


def test_a_user_file_adds_and_replaces_profiles(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        "[profiles.pi5]\nmemory-gb = 1\ngflops = 2\nuplink-mbps = 3\ndownlink-mbps = 4\n"
        "latency-ms = 5\navailability = 0.5\nfailure-rate = 0\n"
        "[profiles.board]\nmemory-gb = 2\ngflops = 1\nuplink-mbps = 1\ndownlink-mbps = 1\n"
        "latency-ms = 0\navailability = 1\nfailure-rate = 0.1\n"
    )
    profiles = load_profiles(path)
    assert profiles["pi5"].memory_bytes == 1e9 and profiles["pi5"].uplink_bps == 3e6
    assert profiles["board"].latency_s == 0.0 and "laptop" in profiles


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("gflops = 2", "needs 'memory-gb'"),
        ("memory-gb = 1\ngflops = 0", "'gflops' = 0"),
        ("memory-gb = -1\ngflops = 1", "'memory-gb' = -1"),
        ("memory-gb = 1\ngflops = 1\nspeed = 3", "unknown keys ['speed']"),
        ("memory-gb = 1\ngflops = 1\ndaily-pattern = [1, 2]", "not 24 numbers"),
    ],
)
def test_a_bad_profile_is_named_with_its_key(tmp_path: Path, entry: str, message: str) -> None:
    rest = "uplink-mbps = 1\ndownlink-mbps = 1\nlatency-ms = 1\navailability = 1\nfailure-rate = 0"
    path = tmp_path / "bad.toml"
    path.write_text(f"[profiles.x]\n{entry}\n{rest}\n")
    with pytest.raises(ProfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_profiles(path)


def test_availability_above_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        "[profiles.x]\nmemory-gb = 1\ngflops = 1\nuplink-mbps = 1\n"
        "downlink-mbps = 1\nlatency-ms = 1\navailability = 1.5\nfailure-rate = 0\n"
    )
    with pytest.raises(ProfileError, match="'availability' = 1.5, above 1"):
        read_profiles(path)


def test_a_mix_becomes_exact_shares_bound_by_the_seed() -> None:
    profiles = load_profiles()
    shares = parse_mix("phone-low:0.5, pi5:0.3,laptop:0.2", profiles)
    dealt = deal(shares, 1000, seed=3)
    assert Counter(dealt) == {"phone-low": 500, "pi5": 300, "laptop": 200}
    assert dealt == deal(shares, 1000, seed=3) and dealt != deal(shares, 1000, seed=4)
    odd = Counter(deal(parse_mix("pi4:1,pi5:1,laptop:1", profiles), 10, seed=0))
    assert sorted(odd.values()) == [3, 3, 4]


def test_an_unknown_profile_or_share_is_named() -> None:
    profiles = load_profiles()
    with pytest.raises(ProfileError, match="did you mean 'pi5'"):
        parse_mix("pi6:1", profiles)
    with pytest.raises(ProfileError, match="share of 'pi5' must be > 0"):
        parse_mix("pi5:0", profiles)
    with pytest.raises(ProfileError, match="is not name:share"):
        parse_mix("pi5:lots", profiles)


def test_a_csv_names_each_partition_s_device(tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text("partition-id,profile\n1,laptop\n0,pi4\n")
    assert [p.name for p in population(str(path), load_profiles(), 2, seed=0)] == ["pi4", "laptop"]
    with pytest.raises(ProfileError, match=r"no profile for partitions \[2\]"):
        population(str(path), load_profiles(), 3, seed=0)
