"""Data that cannot be split across the nodes that answered stops the run at start with the
reason, before any client trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federated.config import parse_run_config
from server.start_checks import RunFailure, check_split

TINY = {"model.name": "tiny-bert", "model.task": "classification"}


def _file(path: Path, rows: int) -> str:
    path.write_text(
        "".join(
            json.dumps({"text": f"definition {i}", "label": f"c{i % 3}", "category": f"g{i % 3}"})
            + "\n"
            for i in range(rows)
        )
    )
    return str(path)


def test_fewer_natural_groups_than_clients_is_refused(tmp_path: Path) -> None:
    config = parse_run_config(
        {
            **TINY,
            "data.name": _file(tmp_path / "d.jsonl", 60),
            "data.group-column": "category",
            "data.partitioner": "natural",
        }
    )
    check_split(config, 3)
    with pytest.raises(RunFailure, match="the data cannot be split across 4 clients"):
        check_split(config, 4)


def test_more_clients_than_examples_is_refused(tmp_path: Path) -> None:
    config = parse_run_config(
        {**TINY, "data.name": _file(tmp_path / "d.jsonl", 6), "data.partitioner": "iid"}
    )
    with pytest.raises(RunFailure, match="the data cannot be split across 6 clients"):
        check_split(config, 6)
