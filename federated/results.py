"""The files of a run under ``results/<run>/``: one JSON line per round and a summary.

A run that must not publish all it knows about a round (client-level DP) gives a ``withhold``
function: ``metrics.jsonl`` then holds what it returns, and ``operator.jsonl`` the complete
record, for the server's operator alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from federated.atomic_file import replace_file

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
OPERATOR_FILE = "operator.jsonl"
CHECKPOINT_INFO = "checkpoint.json"
# What became of the nodes a round asked, other than a sound reply (``server.round_outcomes``):
# each is a ``clients_<kind>`` entry of a round and a ``replies_<kind>`` total of the summary.
OUTCOME_KINDS = ("rejected", "declined", "no_reply", "unreachable", "evaluated_only")
Withhold = Callable[[Mapping[str, Any]], dict[str, Any]]


class RunResults:
    """Append-only per-round metrics and a summary, in one folder."""

    def __init__(self, folder: Path, withhold: Withhold | None = None) -> None:
        self.folder = folder
        self.metrics_path = folder / METRICS_FILE
        self.operator_path = folder / OPERATOR_FILE
        self.withhold = withhold

    @classmethod
    def create(cls, folder: Path, withhold: Withhold | None = None) -> RunResults:
        """The results of a new run in ``folder``, which must not hold another run's."""
        results = cls(folder, withhold)
        if results.metrics_path.exists() or (folder / SUMMARY_FILE).exists():
            raise FileExistsError(
                f"{folder} already holds a run's results; choose another run-name, or move them"
            )
        folder.mkdir(parents=True, exist_ok=True)
        results.metrics_path.write_text("")
        if withhold is not None:
            results.operator_path.write_text("")
        return results

    @classmethod
    def resume(cls, folder: Path, last_round: int, withhold: Withhold | None = None) -> RunResults:
        """The results of a run going on after ``last_round``: rounds recorded after its
        checkpoint (the server died between the two writes) are dropped, to be run again."""
        results = cls(folder, withhold)
        paths = [results.metrics_path] + ([results.operator_path] if withhold else [])
        for path in paths:
            kept = [r for r in read_rounds(path) if r["round"] <= last_round]
            text = "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in kept)
            replace_file(path, text.encode())
        return results

    def append_round(self, record: Mapping[str, Any]) -> None:
        if self.withhold is not None:
            _append(self.operator_path, record)
        _append(self.metrics_path, self.published(record))

    def published(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        """What the run publishes of a round's record: what ``metrics.jsonl`` gets."""
        return record if self.withhold is None else self.withhold(record)

    def rounds(self) -> list[dict[str, Any]]:
        """The rounds as the run publishes them."""
        return read_rounds(self.metrics_path)

    def operator_rounds(self) -> list[dict[str, Any]]:
        """The rounds as the server saw them (the same, unless it withholds some)."""
        return read_rounds(self.operator_path if self.withhold else self.metrics_path)

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        path = self.folder / SUMMARY_FILE
        text = json.dumps(finite(summary), indent=2, sort_keys=True, allow_nan=False)
        replace_file(path, (text + "\n").encode())
        return path


def _append(path: Path, record: Mapping[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(finite(record), sort_keys=True, allow_nan=False) + "\n")
        handle.flush()


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None: JSON has no such numbers, and a
    non-finite loss in the record would break whoever reads it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def read_rounds(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in round order. A last line without its newline
    is a write cut short (a full disk, a kill) and is not a record."""
    text = path.read_text()
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]
