"""Test-wide settings: offline hub, one torch thread (CI has 2 cores; more threads only contend),
a private folder for the privacy ledgers clients keep on their node, ``flower``: a module's own
``fedtune run`` against a private local SuperLink, and ``lora_run``: a finished run to read."""

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray's workers inherit this: simulated clients never write into the user's own state folder.
os.environ.setdefault("FEDTUNE_STATE_DIR", tempfile.mkdtemp(prefix="fedtune-test-state-"))

import pytest  # noqa: E402
import torch  # noqa: E402

from federated.cli.flower_cli import FlowerCli  # noqa: E402
from tests.finished_runs import LORA_RUN, LORA_RUN_CLIENTS  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def flower(tmp_path_factory: pytest.TempPathFactory):
    cli = FlowerCli(tmp_path_factory.mktemp("flwr-home"))
    yield cli
    cli.close()


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.in_process import run_federation

    out = tmp_path_factory.mktemp("finished")
    return run_federation(out, "lora", LORA_RUN, clients=LORA_RUN_CLIENTS)
