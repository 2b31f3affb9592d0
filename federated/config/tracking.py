"""The tracking section: where a run's numbers go beside its own files (TensorBoard, MLflow)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from federated.config.options import ConfigError, option

BACKENDS = ("none", "tensorboard", "mlflow")
DEFAULT_EXPERIMENT = "fedtune"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class TrackingSettings:
    backend: str = option(
        "none",
        "Also log each round's numbers (as metrics.jsonl has them), the run config and, at the "
        "end, the final model, plots and summary: none, tensorboard (event files in "
        "RUN_DIR/tensorboard) or mlflow (a run in tracking.uri); see docs/tracking.md.",
        choices=BACKENDS,
    )
    uri: str = option(
        "",
        "MLflow's tracking URI (sqlite:///PATH, http://HOST:PORT, ...); empty: "
        "sqlite:///RUN_DIR/mlflow.db, its artifacts in RUN_DIR/mlartifacts.",
    )
    experiment: str = option(DEFAULT_EXPERIMENT, "The MLflow experiment the run is logged in.")


def check_tracking(tracking: TrackingSettings) -> None:
    """MLflow's keys apply to MLflow alone, and its URI names a scheme."""
    if tracking.backend != "mlflow":
        for key, value, default in (
            ("uri", tracking.uri, ""),
            ("experiment", tracking.experiment, DEFAULT_EXPERIMENT),
        ):
            if value != default:
                raise ConfigError(
                    f"run config 'tracking.{key}' = {value!r}: applies to tracking.backend = mlflow"
                )
        return
    if tracking.uri and not _SCHEME.match(tracking.uri):
        raise ConfigError(
            f"run config 'tracking.uri' = {tracking.uri!r}: must be a URI, such as "
            "sqlite:////abs/path/mlflow.db or http://host:5000 (empty: the run folder's own)"
        )
    if not tracking.experiment.strip():
        raise ConfigError(
            f"run config 'tracking.experiment' = {tracking.experiment!r}: name an MLflow experiment"
        )
