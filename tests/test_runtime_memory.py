"""The client runtime's memory is measured once for a machine's software and kept: read from
fedtune's cache folder afterwards, measured again when the software changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from federated.devices import runtime_memory


@pytest.fixture
def measurements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """Each measurement made, with the cache in ``tmp_path``; the process's value forgotten
    before and after, so that no other test sees this one's."""
    made: list[float] = []

    def measure() -> float:
        made.append(500e6 + len(made))
        return made[-1]

    monkeypatch.setenv("FEDTUNE_CACHE", str(tmp_path))
    monkeypatch.setattr(runtime_memory, "measure_runtime_bytes", measure)
    runtime_memory.runtime_bytes.cache_clear()
    yield made
    runtime_memory.runtime_bytes.cache_clear()


def test_the_runtime_is_measured_once_and_then_read_from_the_cache(
    measurements: list[float], tmp_path: Path
) -> None:
    first = runtime_memory.runtime_bytes()
    runtime_memory.runtime_bytes.cache_clear()  # a new process
    assert runtime_memory.runtime_bytes() == first == 500e6
    assert len(measurements) == 1
    cached = json.loads((tmp_path / runtime_memory.CACHE_FILE_NAME).read_text())
    assert cached == {runtime_memory.software_key(): 500e6}


def test_other_software_is_measured_again(
    measurements: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime_memory.runtime_bytes()
    runtime_memory.runtime_bytes.cache_clear()
    monkeypatch.setattr(runtime_memory, "software_key", lambda: "torch upgraded")
    assert runtime_memory.runtime_bytes() == 500e6 + 1
    assert len(measurements) == 2


def test_a_torn_cache_file_is_measured_again(measurements: list[float], tmp_path: Path) -> None:
    (tmp_path / runtime_memory.CACHE_FILE_NAME).write_text('{"half')
    assert runtime_memory.runtime_bytes() == 500e6
