"""Bad input that stops a run at start, through the real ServerApp and ClientApps (in process):
each is one line saying what and how to fix it, before any client trains, and no results folder
is left behind. ``test_e2e_bad_inputs`` runs the same path out through ``fedtune run``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.start_checks import RunFailure
from tests.in_process import run_federation

TINY = {"model.name": "tiny-bert", "model.task": "classification", "num-server-rounds": 1}


def _rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _table(folder: Path) -> dict[str, tuple[dict, str, int, Path]]:
    """Case -> (run config, the line expected, number of nodes, output folder): one case for
    each way a run refuses at start past its parsed config (the data file, the model, the split,
    the output folder, a strategy's options)."""
    classes = [
        {
            "text": f"definition {i}",
            "label": ["animal", "plant", "tool"][i % 3],
            "category": f"c{i % 3}",
        }
        for i in range(60)
    ]
    good = _rows(folder / "good.jsonl", classes)
    latin1 = folder / "latin1.jsonl"
    latin1.write_bytes(b'{"text": "caf\xe9", "label": "a"}\n')
    long = _rows(folder / "long.jsonl", [*classes[:3], {"text": "w" * (2 << 20), "label": "a"}])
    (folder / "a-file").write_text("an output-dir under this is under a regular file")
    out = folder / "results"
    return {
        "encoding": (
            {**TINY, "data.name": str(latin1)},
            "line 1: not UTF-8 text (byte 0xe9",
            2,
            out,
        ),
        "long line": (
            {**TINY, "data.name": long},
            "long.jsonl, line 4: longer than 1 MiB",
            2,
            out,
        ),
        "model path": (
            {**TINY, "model.name": str(folder / "no-model"), "data.name": good},
            "run config 'model.name' =",
            2,
            out,
        ),
        "groups": (
            {
                **TINY,
                "data.name": good,
                "data.group-column": "category",
                "data.partitioner": "natural",
            },
            "the data cannot be split across 4 clients",
            4,
            out,
        ),
        "output-dir": (
            {**TINY, "data.name": good},
            "run config 'output-dir': results cannot be written in",
            2,
            folder / "a-file" / "results",
        ),
        # The clients pass a strategy's options through; the server's registry refuses them.
        "strategy option": (
            {**TINY, "data.name": good, "strategy.lora-fair.lambda": 0.5},
            "run config 'strategy.lora-fair.lambda' = 0.5: applies to strategy.name = 'lora-fair'",
            2,
            out,
        ),
    }


@pytest.mark.parametrize(
    "case", ["encoding", "long line", "model path", "groups", "output-dir", "strategy option"]
)
def test_a_bad_input_stops_the_run_at_start_with_its_line(case: str, tmp_path: Path) -> None:
    config, line, nodes, out = _table(tmp_path)[case]
    with pytest.raises(RunFailure) as failure:
        run_federation(out, "bad", config, clients=nodes)
    assert line in str(failure.value) and "\n" not in str(failure.value)
    assert not (out / "bad").exists()
