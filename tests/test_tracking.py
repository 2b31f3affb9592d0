"""A run's tracker holds what metrics.jsonl holds, number for number, read back with the
tracker's own readers (TensorBoard's EventAccumulator, MLflow's client). Each backend's run is
one that was cut short and resumed: its tracker failed at round 1 (one warning, and the run
went on to checkpoint the round), then the disk filled at round 2; the resume logged round 1
from metrics.jsonl, then round 2, into the same log folder or MLflow run, no step twice."""

from __future__ import annotations

import ast
import errno
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy
import pytest
from matplotlib.image import imread

import federated.results
from federated.results import read_rounds
from server.mlflow_tracker import RUN_FILE, MlflowBackend
from server.resume import FREE_KEYS
from server.start_checks import RunFailure
from server.tensorboard_tracker import FOLDER, TensorBoardBackend
from server.tracking import numbers
from tests.in_process import run_federation
from tests.simulate import ROOT
from tests.test_package_imports import PACKAGES

TRACKER_MODULES = ("server.mlflow_tracker", "server.tensorboard_tracker")
RUN = {
    "model.name": "tiny-llama",
    "num-server-rounds": 2,
    "train.local-steps": 2,
    "eval.max-examples": 8,
    "strategy.fraction-evaluate": 0.0,  # no client evaluates: a third of each round's time
}


def _metrics(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl as the tracker should hold it: each number's (round, value) pairs."""
    series: dict[str, list[tuple[int, float]]] = {}
    for record in read_rounds(folder / federated.results.METRICS_FILE):
        for key, value in numbers(record).items():
            series.setdefault(key, []).append((record["round"], value))
    return series


@contextmanager
def _warnings() -> Iterator[list[str]]:
    """The warnings the server logs meanwhile."""
    lines: list[str] = []

    class Warnings(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.WARNING:
                lines.append(record.getMessage())

    handler = Warnings()
    logging.getLogger("flwr").addHandler(handler)
    try:
        yield lines
    finally:
        logging.getLogger("flwr").removeHandler(handler)


def _cut_short_and_resumed(out: Path, backend: type, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """The run folder, the first launch's warnings and what its tracker held when it ended."""
    log_metrics = backend.log_metrics

    def store_fails_at_round_1(self, step: int, metrics: dict) -> None:
        if step == 1:
            raise OSError("database is locked")
        log_metrics(self, step, metrics)

    append = federated.results._append

    def disk_fills_at_round_2(path: Path, record: dict) -> None:
        if record.get("round") == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        append(path, record)

    config = {**RUN, "tracking.backend": backend.name}
    with monkeypatch.context() as patch, _warnings() as warnings:
        patch.setattr(backend, "log_metrics", store_fails_at_round_1)
        patch.setattr(federated.results, "_append", disk_fills_at_round_2)
        with pytest.raises(RunFailure, match="No space left"):
            run_federation(out, "run", config, clients=3)
    folder = out / "run"
    checkpointed = json.loads((folder / "checkpoint.json").read_text())["round"]
    first = {"warnings": warnings, "checkpointed": checkpointed, **_held(folder, backend.name)}
    run_federation(out, "again", {**config, "resume": str(folder)}, clients=3)
    return folder, first


def _held(folder: Path, backend: str) -> dict:
    if backend == "mlflow":
        client, run_id = _mlflow(folder)
        steps = [m.step for m in client.get_metric_history(run_id, "round")]
        return {"steps": steps, "run_id": run_id, "status": client.get_run(run_id).info.status}
    return {"steps": [e.step for e in _tensorboard(folder).Scalars("round")]}


def _tensorboard(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / FOLDER), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _mlflow(folder: Path):
    from mlflow.tracking import MlflowClient

    run_id = json.loads((folder / RUN_FILE).read_text())["run_id"]
    return MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}"), run_id


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    with pytest.MonkeyPatch.context() as monkeypatch:
        out = tmp_path_factory.mktemp("tracking")
        return _cut_short_and_resumed(out, TensorBoardBackend, monkeypatch)


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    with pytest.MonkeyPatch.context() as monkeypatch:
        out = tmp_path_factory.mktemp("tracking")
        return _cut_short_and_resumed(out, MlflowBackend, monkeypatch)


# Each backend's run is cut short and resumed (two runs): MLflow's, with its SQLite store, is
# the end-to-end layer's.
@pytest.mark.parametrize("backend", ["tensorboard", pytest.param("mlflow", marks=pytest.mark.slow)])
def test_a_failing_tracker_costs_one_warning_and_the_tracker_not_the_run(
    backend: str, request: pytest.FixtureRequest
) -> None:
    _, first = request.getfixturevalue(f"{backend}_run")
    assert [line for line in first["warnings"] if line.startswith("fedtune:")] == [
        f"fedtune: tracking with {backend} stopped (logging round 1 failed: database is "
        "locked); the run goes on, and metrics.jsonl holds every round (a resume logs what "
        "the tracker lacks)"
    ]
    assert first["checkpointed"] == 1 and first["steps"] == [0]


def test_tensorboard_holds_every_number_of_metrics_jsonl(tensorboard_run: tuple) -> None:
    from tensorboard.util import tensor_util

    folder, _ = tensorboard_run
    events = _tensorboard(folder)
    expected = _metrics(folder)
    assert {"round", "test_loss", "train_loss", "bytes_up", "round_seconds"} <= set(expected)
    assert [step for step, _ in expected["round"]] == [0, 1, 2]
    logged = {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }
    # TensorBoard keeps 32-bit floats: each number as float32 rounds it.
    assert logged == {
        key: [(step, float(numpy.float32(value))) for step, value in series]
        for key, series in expected.items()
    }
    config = json.loads((folder / "summary.json").read_text())["config"]
    text = tensor_util.make_ndarray(events.Tensors("config/text_summary")[0].tensor_proto)
    assert f"| train.local-steps | {config['train.local-steps']} |" in text.item().decode()
    # The config again as the HParams tab's parameters of this run.
    from tensorboard.plugins.hparams import plugin_data_pb2

    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    logged = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert logged["train.local-steps"].string_value == str(config["train.local-steps"])
    assert set(logged) == set(config)
    # The loss plot, as the run folder's PNG has it.
    (image,) = events.Images("plots/loss")
    height, width = imread(folder / "loss.png").shape[:2]
    assert (image.height, image.width) == (height, width)
    assert len(list((folder / FOLDER).iterdir())) == 2  # one event file per launch


def test_mlflow_holds_the_numbers_the_config_and_the_files(mlflow_run: tuple) -> None:
    folder, first = mlflow_run
    client, run_id = _mlflow(folder)
    assert run_id == first["run_id"] and first["status"] == "FAILED"
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    expected = _metrics(folder)
    assert [step for step, _ in expected["round"]] == [0, 1, 2]
    assert set(run.data.metrics) == set(expected)
    for key, series in expected.items():
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, key)] == series
    config = json.loads((folder / "summary.json").read_text())["config"]
    # The first launch's config: a resume may change where the run is written, no more.
    assert {k: v for k, v in run.data.params.items() if k not in FREE_KEYS} == {
        key: str(value) for key, value in config.items() if key not in FREE_KEYS
    }
    assert run.data.params.keys() == config.keys()
    files = {f.path for f in client.list_artifacts(run_id)}
    assert files == {"adapter", "loss.png", "metrics.jsonl", "summary.json"}
    adapter = {Path(f.path).name for f in client.list_artifacts(run_id, "adapter")}
    assert adapter == {p.name for p in (folder / "adapter").iterdir()}
    assert run.info.artifact_uri.startswith((folder / "mlartifacts").as_uri())


@pytest.mark.parametrize(
    ("backend", "command"),
    [("tensorboard", "pip install tensorboard==2.21.0"), ("mlflow", "pip install mlflow-skinny")],
)
def test_a_backend_not_installed_stops_the_run_at_start_naming_the_pip_command(
    backend: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, backend, None)  # as if not installed: find_spec says None
    with pytest.raises(RunFailure) as err:
        run_federation(tmp_path, "run", {**RUN, "tracking.backend": backend}, clients=3)
    assert str(err.value).startswith(f"run config 'tracking.backend' = '{backend}': the {backend}")
    assert command in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run").exists()  # before the run wrote anything


def test_a_run_that_does_not_track_imports_no_tracker() -> None:
    """The trackers (and the modules that use them) are imported inside the functions that
    use them: no module imports them where it is itself imported."""
    lazy = {"mlflow", "tensorboard", "torch.utils.tensorboard", *TRACKER_MODULES}
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                found += [f"{path.relative_to(ROOT)}: {n}" for n in names if _under(n, lazy)]
    assert found == []


def _under(name: str, modules: set[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)
