"""Bad user input through the README's run command (``fedtune run``): each stops the run before
any client trains, with one line saying what and how to fix it, the run recorded as failed by
Flower, a non-zero exit, and no results folder left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulation.flower_cli import FlowerCli

pytestmark = pytest.mark.slow

TINY = "model.name='tiny-bert' model.task='classification' num-server-rounds=1"


def _rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _table(folder: Path) -> dict[str, tuple[str, str, int]]:
    """Case name -> (run config, the line expected, number of nodes)."""
    classes = [{"text": f"definition {i}", "label": ["animal", "plant", "tool"][i % 3],
                "category": f"c{i % 3}"} for i in range(60)]  # fmt: skip
    good = _rows(folder / "good.jsonl", classes)
    latin1 = folder / "latin1.jsonl"
    latin1.write_bytes(b'{"text": "caf\xe9", "label": "a"}\n')
    one_class = _rows(folder / "one.jsonl", [{**row, "label": "animal"} for row in classes])
    numbered = [{**row, "label": i % 3} for i, row in enumerate(classes)]
    huge_label = _rows(folder / "huge.jsonl", [*numbered[:-1], {"text": "x", "label": 1_000_000}])
    few = _rows(folder / "few.jsonl", classes[:6])
    data = f"{TINY} data.name="
    return {
        "rank": ("lora.rank=0", "run config 'lora.rank' = 0: must be >= 1", 2),
        "seed": ("seed=-1", "run config 'seed' = -1: must be >= 0", 2),
        "encoding": (f"{data}'{latin1}'", "line 1: not UTF-8 text (byte 0xe9", 2),
        "column": (f"{data}'{good}' data.text-column='body'", "no column 'body'", 2),
        "one class": (f"{data}'{one_class}'", "holds a single class ('animal')", 2),
        "huge label": (f"{data}'{huge_label}'", "integer labels up to 1000000 but only 4", 2),
        "model path": (
            f"model.name='{folder / 'no-model'}' model.task='classification' data.name='{good}'",
            "run config 'model.name' =",
            2,
        ),  # fmt: skip
        "groups": (
            f"{data}'{good}' data.group-column='category' data.partitioner='natural'",
            "the data cannot be split across 4 clients",
            4,
        ),  # fmt: skip
        "clients": (f"{data}'{few}' data.partitioner='iid'", "cannot be split across 6 clients", 6),
        "nodes": (
            f"{data}'{good}' strategy.min-available-nodes=5 server.node-wait-timeout=3.0",
            "only 2 of the 5 nodes strategy.min-available-nodes asks for",
            2,
        ),  # fmt: skip
    }


@pytest.fixture(scope="module")
def flower(tmp_path_factory: pytest.TempPathFactory):
    cli = FlowerCli(tmp_path_factory.mktemp("flwr-home"))
    yield cli
    cli.close()


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
