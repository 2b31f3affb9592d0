"""The app bundle that ``flwr run`` builds holds every file the app reads: a file left out
works in tests that run the apps in-process and fails only under ``flwr run``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pathspec

ROOT = Path(__file__).resolve().parents[1]
APP_PACKAGES = ("federated", "client", "server", "strategies", "simulation")


def test_every_file_of_the_app_packages_goes_into_the_bundle() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = pathspec.PathSpec.from_lines(
        "gitwildmatch", config["tool"]["flwr"]["app"]["fab-include"]
    )
    files = [
        path.relative_to(ROOT).as_posix()
        for package in APP_PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert "federated/devices/presets.toml" in files
    assert [f for f in files if not included.match_file(f)] == []
