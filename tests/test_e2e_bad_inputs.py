"""Bad user input through the README's run command (``fedtune run``): each stops the run before
any client trains, with one line saying what and how to fix it, the run recorded as failed by
Flower, a non-zero exit, and no results folder left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = "model.name='tiny-bert' model.task='classification' num-server-rounds=1"


def _rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _table(folder: Path) -> dict[str, tuple[str, str, int]]:
    """Case name -> (run config, the line expected, number of nodes): a bad run config, a
    strategy's option that Flower takes from pyproject and the server refuses, and too few nodes
    in Flower's simulation. Every other way a run refuses at start (the data file,
    the model, the split, the output folder) takes the same path out of the ServerApp and is
    run in process (``test_bad_inputs_at_start``); each other reason on those ways is a unit
    test (``test_config``, ``test_data_corpus``, ``test_start_checks``)."""
    classes = [
        {"text": f"definition {i}", "label": ["animal", "plant", "tool"][i % 3]} for i in range(60)
    ]
    good = _rows(folder / "good.jsonl", classes)
    return {
        "seed": ("seed=-1", "run config 'seed' = -1: must be >= 0", 2),
        "strategy option": (
            f"{TINY} data.name='{good}' strategy.name='flexlora' strategy.lora-fair.lambda=0.5",
            "run config 'strategy.lora-fair.lambda' = 0.5: applies to strategy.name = 'lora-fair'",
            2,
        ),
        "nodes": (
            f"{TINY} data.name='{good}' strategy.min-available-nodes=5 "
            "server.node-wait-timeout=3.0",
            "only 2 of the 5 nodes strategy.min-available-nodes asks for",
            2,
        ),
    }


def test_each_bad_input_fails_the_run_at_start_with_its_line(flower, tmp_path: Path) -> None:
    out = tmp_path / "results"
    failures = []
    for case, (run_config, line, nodes) in _table(tmp_path).items():
        proc = flower.run(f"{run_config} output-dir='{out}'", num_supernodes=nodes, timeout=300)
        output = proc.stdout + proc.stderr
        recorded_failed = "ended finished:failed" in output
        if proc.returncode == 0 or line not in output or not recorded_failed:
            failures.append(f"{case}: exit {proc.returncode}, line found {line in output}")
        assert not out.exists() or not any(out.iterdir()), case
    assert not failures, failures
