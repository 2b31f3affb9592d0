"""The linter and the formatter the project configures (``[tool.ruff]`` in pyproject.toml) pass on
the whole tree, so the README's test command enforces them too."""

from __future__ import annotations

import subprocess
import sys

from tests.simulate import ROOT


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, "--exclude", ".venv", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ruff_finds_nothing() -> None:
    checked = _ruff("check")
    assert checked.returncode == 0, checked.stdout[-3000:]


def test_the_code_is_formatted() -> None:
    formatted = _ruff("format", "--check")
    assert formatted.returncode == 0, formatted.stdout[-3000:]
