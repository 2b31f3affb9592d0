"""``fedtune run`` and a local SuperLink it did not start: a real second ``flower-superlink``,
started in another folder on the port ``flwr`` looks for, is refused with one line naming its
pid, address and folder and how to proceed; a ``RAY_ADDRESS`` that SuperLink lacks is refused
the same way; from its own folder, the run says which SuperLink it uses. None of them starts a
run, so each takes seconds."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from federated.cli.flower_cli import BIN, ROOT, free_port
from tests.deployment import LocalDeployment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory: pytest.TempPathFactory):
    """A local simulation SuperLink as ``flwr`` starts one, started in a folder of its own;
    the environment in which ``flwr`` finds it."""
    folder = tmp_path_factory.mktemp("other-checkout")
    port, control = free_port(), free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(folder / "flwr-home"),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    env.pop("RAY_ADDRESS", None)
    command = [
        str(BIN / "flower-superlink"),
        "--insecure",
        "--simulation",
        "--control-api-address",
        f"127.0.0.1:{control}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while not _answers(port):
        assert proc.poll() is None and time.monotonic() < deadline, "the SuperLink never started"
        time.sleep(0.5)
    yield proc, folder, env
    LocalDeployment.kill(proc)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).is_success
    except httpx.HTTPError:
        return False


def _fedtune_run(env: dict[str, str], cwd: Path, app: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "fedtune"), "run", str(app)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_local_superlink_started_in_another_folder_is_refused_by_name(elsewhere) -> None:
    proc, folder, env = elsewhere
    done = _fedtune_run(env, cwd=ROOT)
    assert done.returncode == 2, done.stdout + done.stderr
    port = env["FLWR_LOCAL_SUPERLINK_HTTP_API_PORT"]
    assert done.stderr == (
        f"fedtune run: the local SuperLink at 127.0.0.1:{port} (pid {proc.pid}) was started in "
        f"{folder}: this run would run there, in that folder's environment, and its results land "
        f"there; stop it (kill {proc.pid}) and run again, or give this run a local SuperLink of "
        "its own on free ports (FLWR_LOCAL_SUPERLINK_HTTP_API_PORT and "
        "FLWR_LOCAL_CONTROL_API_PORT)\n"
    )
    assert "run ID" not in done.stdout  # flwr run never started


def test_a_ray_address_the_local_superlink_lacks_is_refused(elsewhere) -> None:
    proc, folder, env = elsewhere
    done = _fedtune_run({**env, "RAY_ADDRESS": "127.0.0.1:6390"}, cwd=folder)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(
        f"fedtune run: RAY_ADDRESS=127.0.0.1:6390 is set, but the local SuperLink at "
        f"127.0.0.1:{env['FLWR_LOCAL_SUPERLINK_HTTP_API_PORT']} (pid {proc.pid}) runs "
        "simulations with RAY_ADDRESS=(unset)"
    )
    assert done.stderr.count("\n") == 1


def test_from_its_own_folder_the_run_names_the_superlink_it_uses(elsewhere) -> None:
    proc, folder, env = elsewhere
    done = _fedtune_run(env, cwd=folder, app=folder / "no-app")  # flwr run then ends at once
    assert done.returncode != 0
    assert done.stderr.startswith(
        f"fedtune run: using the local SuperLink at "
        f"127.0.0.1:{env['FLWR_LOCAL_SUPERLINK_HTTP_API_PORT']} (pid {proc.pid}), started in "
        f"{folder}; a relative output-dir is under that folder\n"
    )
