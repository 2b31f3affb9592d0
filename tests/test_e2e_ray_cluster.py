"""The simulation on an existing Ray cluster, as a run that outgrows one machine would use one:
a head started with ``ray start --head`` here, the run joining it through ``RAY_ADDRESS``, its
clients training in the cluster's workers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.run_files import rounds
from tests.simulate import app_env, simulate

pytestmark = pytest.mark.slow

PORT = 6391
_MARKER = "FEDTUNE_TEST_RAY_CLUSTER"


def _stop_processes_with(marker: str) -> None:
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if f"{_MARKER}={marker}".encode() in environ.read_bytes():
                os.kill(int(environ.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _ray() -> str:
    return str(Path(shutil.which("ray") or Path(os.sys.executable).with_name("ray")))


def test_a_run_trains_on_a_ray_cluster_started_apart(tmp_path: Path) -> None:
    config = {
        "model.name": "tiny-bert",
        "data.name": "wordnet",
        "data.num-classes": 3,
        "data.max-per-class": 100,
        "data.partitioner": "iid",
        "num-server-rounds": 2,
        "train.local-steps": 2,
        "strategy.fraction-evaluate": 0.0,
        "output-dir": str(tmp_path),
        "run-name": "cluster",
    }
    # The cluster's workers get their environment from `ray start`, not from the driver.
    # A marker in the environment every process of this cluster inherits, to stop them all and
    # no other Ray on the machine.
    marker = f"fedtune-test-cluster-{uuid.uuid4().hex}"
    # Ray records the newest `ray start` cluster in its temp folder, and every later ray.init()
    # on the machine would join that cluster, dead or alive: this one keeps its records apart.
    ray_tmp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: Ray's socket paths are
    env = {**os.environ, **app_env(config), _MARKER: marker, "RAY_TMPDIR": ray_tmp}
    head = [
        _ray(),
        "start",
        "--head",
        f"--port={PORT}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
    try:
        folder = simulate(config, 3, env={"RAY_ADDRESS": f"127.0.0.1:{PORT}"})
        status = subprocess.run(
            [_ray(), "status", f"--address=127.0.0.1:{PORT}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        _stop_processes_with(marker)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert (
        not Path("/tmp/ray/ray_current_cluster").exists()
        or str(PORT) not in Path("/tmp/ray/ray_current_cluster").read_text()
    )
    records = rounds(folder)
    assert [r["clients_accepted"] for r in records[1:]] == [3, 3]
    assert records[-1]["test_loss"] < records[0]["test_loss"]
    assert "Active" in status.stdout  # the run's cluster was the one started here
