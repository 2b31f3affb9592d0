"""``fedtune results RUN_DIR``: what a run did, in a few lines, from its folder.

A finished run is read from ``summary.json``; an unfinished one (stopped, killed, or still
going) from ``metrics.jsonl`` and its checkpoint's readable copy, with how to resume it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from federated.results import (
    CHECKPOINT_INFO,
    METRICS_FILE,
    OPERATOR_FILE,
    OUTCOME_KINDS,
    SUMMARY_FILE,
    read_rounds,
)


def _metrics(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k.removeprefix('test_')} {v:.4g}"
        for k, v in sorted(values.items())
        if isinstance(v, int | float)
    )


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def _outcomes(summary: dict[str, Any]) -> str:
    kinds = [
        f"{summary.get(f'replies_{kind}', 0)} {kind.replace('_', ' ')}" for kind in OUTCOME_KINDS
    ]
    return (
        f"training replies not used: {', '.join(kinds)}; evaluations lost "
        f"{summary.get('evaluations_lost', 0)}, rejected "
        f"{summary.get('evaluations_rejected', 0)}"
    )


def _times(summary: dict[str, Any]) -> str:
    line = f"wall time {summary['wall_seconds'] / 60:.1f} min"
    if summary.get("resumes"):
        line += (
            f" from the first launch, across {summary['resumes']} resume(s) "
            f"({summary['running_seconds'] / 60:.1f} min running)"
        )
    return line


def _finished(folder: Path, summary: dict[str, Any]) -> list[str]:
    config = summary.get("config", {})
    lines = [
        f"run {summary['run_name']}: {config.get('model.name')} on {config.get('data.name')}, "
        f"mode {config.get('mode')}, strategy {config.get('strategy.name')}, "
        f"{summary['rounds']} rounds",
        f"test: {_metrics(summary['initial_test'])} -> {_metrics(summary['final_test'])}",
    ]
    if "bytes_up_total" not in summary:
        lines.append(
            "clients' statistics, bytes and times: withheld by client-level DP "
            f"(the operator's own record: {folder / OPERATOR_FILE})"
        )
    else:
        lines += [
            f"bytes: {_megabytes(summary['bytes_up_total'])} up, "
            f"{_megabytes(summary['bytes_down_total'])} down "
            f"({_megabytes(summary['bytes_up_per_client_round'] or 0)} up a client a round)",
            _outcomes(summary),
            _times(summary),
        ]
    if "simulated_hours" in summary:
        reached = {k: v for k, v in summary.items() if k.startswith("hours_to_")}
        targets = "".join(
            f"; {k.removeprefix('hours_to_')}: " + ("not reached" if v is None else f"{v:.2f} h")
            for k, v in reached.items()
        )
        lines.append(f"simulated: {summary['simulated_hours']:.2f} h{targets}")
    files = summary.get("model_files") or []
    if files:
        lines.append("model: " + ", ".join(files))
    return lines


def _unfinished(folder: Path) -> list[str]:
    rounds = read_rounds(folder / METRICS_FILE)
    trained = [r for r in rounds if r.get("round", 0) > 0]
    lines = [f"run {folder.name}: not finished ({len(trained)} rounds recorded, no summary)"]
    if rounds:
        last = rounds[-1]
        tests = {k: v for k, v in last.items() if k.startswith("test_")}
        lines.append(f"round {last.get('round')}: {_metrics(tests)}")
    info = folder / CHECKPOINT_INFO
    if info.is_file():
        checkpoint = json.loads(info.read_text())
        lines.append(
            f"checkpoint after round {checkpoint['round']}: continue with "
            f"--run-config \"resume='{folder}'\""
        )
    return lines


def describe_run(folder: Path) -> str:
    """The run in ``folder``, in a few lines; a ``FileNotFoundError`` naming what is missing."""
    summary = folder / SUMMARY_FILE
    if summary.is_file():
        return "\n".join(_finished(folder, json.loads(summary.read_text())))
    if (folder / METRICS_FILE).is_file():
        return "\n".join(_unfinished(folder))
    raise FileNotFoundError(f"{folder} holds no {SUMMARY_FILE} or {METRICS_FILE}: not a run folder")
