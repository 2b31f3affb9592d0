"""MLflow as a run's tracker: one MLflow run per fedtune run, in ``tracking.uri``.

Without a URI the store is the run folder's own: ``sqlite:///RUN_DIR/mlflow.db`` (MLflow refuses
its file store unless told otherwise), the artifacts in ``RUN_DIR/mlartifacts``. The MLflow run's
ID is kept in ``RUN_DIR/mlflow_run.json``, so a resumed run goes on in it.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

from federated.atomic_file import replace_file
from federated.config.tracking import TrackingSettings

RUN_FILE = "mlflow_run.json"
DATABASE = "mlflow.db"
ARTIFACTS = "mlartifacts"
# Logged with every round's numbers: the round a resume finds complete.
STEP_KEY = "round"


def store_uri(settings: TrackingSettings, run_folder: Path) -> str:
    """The tracking URI the run logs to: the user's, or the run folder's own database."""
    return settings.uri or f"sqlite:///{run_folder / DATABASE}"


class MlflowBackend:
    name = "mlflow"

    def __init__(self, settings: TrackingSettings, run_folder: Path) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = store_uri(settings, run_folder)
        self.client = MlflowClient(tracking_uri=self.uri)
        # Opening a SQLite store logs its table set-up, and MLflow's own use of SQLAlchemy
        # warns of a deprecation: lines in the run's console that ask nothing of its user.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        self.run_id = self._saved_run(run_folder / RUN_FILE)
        self.new = self.run_id is None
        with warnings.catch_warnings():  # the store opens at its first use
            warnings.simplefilter("ignore", DeprecationWarning)
            if self.run_id is None:
                self.run_id = self._new_run(settings, run_folder)
            else:
                self.client.update_run(self.run_id, status="RUNNING")
        self.browse = f"mlflow ui --backend-store-uri {self.uri}"

    def _saved_run(self, path: Path) -> str | None:
        """The run's MLflow run, when an earlier launch logged it to this store."""
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        return saved["run_id"] if saved.get("tracking_uri") == self.uri else None

    def _new_run(self, settings: TrackingSettings, run_folder: Path) -> str:
        experiment = self.client.get_experiment_by_name(settings.experiment)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            # The run folder's own store keeps its artifacts beside it; a given store, where
            # MLflow (or its server) puts them.
            where = None if settings.uri else (run_folder / ARTIFACTS).as_uri()
            experiment_id = self.client.create_experiment(settings.experiment, where)
        run = self.client.create_run(experiment_id, run_name=run_folder.name)
        state = {"tracking_uri": self.uri, "run_id": run.info.run_id}
        replace_file(run_folder / RUN_FILE, (json.dumps(state, indent=2) + "\n").encode())
        return run.info.run_id

    def last_step(self) -> int | None:
        history = self.client.get_metric_history(self.run_id, STEP_KEY)
        return max((m.step for m in history), default=None)

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        # MLflow refuses longer values (a long prompt or path): they are cut, marked "...".
        entries = [
            Param(k, v if len(v) <= MAX_PARAM_VAL_LENGTH else v[: MAX_PARAM_VAL_LENGTH - 3] + "...")
            for k, v in params.items()
        ]
        for start in range(0, len(entries), MAX_PARAMS_TAGS_PER_BATCH):
            batch = entries[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            self.client.log_batch(self.run_id, params=batch)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, value, now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=entries)  # one write: the round whole

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path=path.name)
            else:
                self.client.log_artifact(self.run_id, str(path))

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
