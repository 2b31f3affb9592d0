"""A run's numbers beside its own files, in an experiment tracker (``tracking.backend``).

Each round's record goes to the tracker as ``metrics.jsonl`` publishes it (under client-level DP,
the released part alone), its round the step; the run config goes as parameters; at the end, the
final model, the plots, ``metrics.jsonl`` and ``summary.json`` go as artifacts, where the
tracker keeps files. Every number of a record is logged but those inside lists: the per-client
and per-device entries vary with who was drawn and grow with the federation, their totals are
numbers of the record already, and ``metrics.jsonl`` keeps them whole. A number inside a
mapping (``simulation``, ``secagg_stages``) is logged under its path, ``simulation/duration_s``.

The tracker logs a round after its checkpoint is saved, so it never holds a round the run will
do again; a resumed run first logs the rounds of ``metrics.jsonl`` its tracker lacks (the last
launch died between the two writes, or its tracker had failed) and goes on. A tracker that
fails is given up with one warning: the run goes on, and ``metrics.jsonl`` has every round.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from logging import INFO, WARNING
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

from flwr.common import log

from federated.config import ConfigError, RunConfig
from federated.config.tracking import TrackingSettings
from federated.results import finite

T = TypeVar("T")
# The module each backend imports, and the command that installs what it needs.
_NEEDS = {
    "tensorboard": ("tensorboard", "pip install tensorboard==2.21.0"),
    "mlflow": ("mlflow", "pip install mlflow-skinny==3.17.2"),
}


class Backend(Protocol):
    """One tracker's run: the calls ``RunTracking`` makes, each of which may raise."""

    name: str
    new: bool  # whether the tracker started this run now (else it goes on with one it holds)
    browse: str  # the command that shows the run

    def last_step(self) -> int | None:
        """The last round the tracker holds; None: none."""

    def log_params(self, params: Mapping[str, str]) -> None: ...

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def log_artifacts(self, paths: list[Path]) -> None: ...

    def close(self, failed: bool) -> None: ...


def check_tracking_installed(tracking: TrackingSettings) -> None:
    """A ``ConfigError`` naming the pip command when the backend's package is missing here."""
    if tracking.backend not in _NEEDS:
        return
    module, command = _NEEDS[tracking.backend]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"run config 'tracking.backend' = {tracking.backend!r}: the {module} package is not "
            f"installed where the server runs; {command} (setup.sh installs it)"
        )


def _open(config: RunConfig, folder: Path) -> Backend:
    if config.tracking.backend == "tensorboard":
        from server.tensorboard_tracker import TensorBoardBackend

        return TensorBoardBackend(folder)
    from server.mlflow_tracker import MlflowBackend

    return MlflowBackend(config.tracking, folder)


def numbers(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of ``record`` outside lists, keyed by its path (``a/b`` inside mappings);
    booleans and missing values (None) are not numbers."""
    found: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            found.update(numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[prefix + key] = float(value)
    return found


class RunTracking:
    """The run's tracker, or none: what the run logs to it, each call guarded so that a
    tracker's failure costs one warning and the tracker, never the run."""

    def __init__(self, name: str, backend: Backend | None) -> None:
        self.name = name
        self.backend = backend

    @classmethod
    def open(
        cls, config: RunConfig, folder: Path, flat_config: Mapping[str, Any], rounds: list[dict]
    ) -> RunTracking:
        """The tracker ``config.tracking`` names for the run in ``folder``, caught up with the
        ``rounds`` the run has recorded (none for a new run)."""
        tracking = cls(config.tracking.backend, None)
        if config.tracking.backend == "none":
            return tracking
        tracking.backend = tracking._guard("opening", lambda: _open(config, folder))
        backend = tracking.backend
        if backend is None:
            return tracking
        log(
            INFO,
            "fedtune: tracking with %s; browse with %s (docs/tracking.md)",
            tracking.name,
            backend.browse,
        )
        if backend.new:
            params = {key: str(value) for key, value in flat_config.items()}
            tracking._guard("logging the run config", lambda: backend.log_params(params))
        last = tracking._guard("reading its last round", backend.last_step)
        for record in rounds:
            if last is None or record["round"] > last:
                tracking.round(record)
        return tracking

    def round(self, record: Mapping[str, Any]) -> None:
        """Log a round's record as ``metrics.jsonl`` has it (non-finite numbers left out)."""
        backend = self.backend
        if backend is not None:
            values = numbers(finite(record))
            step = int(record["round"])
            self._guard(f"logging round {step}", lambda: backend.log_metrics(step, values))

    def finish(self, paths: Iterable[Path]) -> None:
        """Log the files the finished run leaves (those that exist)."""
        backend = self.backend
        if backend is not None:
            files = [p for p in paths if p.exists()]
            self._guard("logging the run's files", lambda: backend.log_artifacts(files))

    def __enter__(self) -> RunTracking:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        _error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        """End the tracker's run: finished, or failed when the run raised."""
        backend = self.backend
        if backend is not None:
            self._guard("closing", lambda: backend.close(failed=kind is not None))
            self.backend = None

    def _guard(self, what: str, action: Callable[[], T]) -> T | None:
        """What ``action`` returns; None, and the tracker given up, when it raises."""
        try:
            return action()
        except Exception as err:  # noqa: BLE001 - whatever a tracker raises, the run goes on
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            log(
                WARNING,
                "fedtune: tracking with %s stopped (%s failed: %s); the run goes on, and "
                "metrics.jsonl holds every round (a resume logs what the tracker lacks)",
                self.name,
                what,
                reason,
            )
            if self.backend is not None:
                with suppress(Exception):  # what it can still close (a file, an open run)
                    self.backend.close(failed=True)
            self.backend = None
            return None
