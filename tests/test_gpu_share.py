"""Several simulated clients on one GPU: the share Ray is given is checked against the planned
job before the run starts, and a share on a machine without a GPU is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from federated.cli.gpu_share import check_gpu_share, clients_per_gpu, planned_bytes, share_problem
from federated.devices.job_plan import CUDA_CONTEXT_BYTES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("share, placed", [(1.0, 1), (0.5, 2), (0.25, 4), (0.3, 3), (2.0, 1)])
def test_ray_places_the_whole_number_of_shares_a_gpu_holds(share, placed) -> None:
    assert clients_per_gpu(share) == placed


def test_a_share_that_overfills_the_gpu_names_the_share_that_fits() -> None:
    # FlowerTune's template: two 4-bit 7B clients on a 24 GB card fit at 10 GB each.
    assert share_problem(0.5, 24e9, 10e9) is None
    line = share_problem(0.25, 24e9, 10e9)
    assert line == (
        "client-resources-num-gpus=0.25 places 4 clients on each GPU, each planned at 10.0 GB: "
        "40.0 GB on a 24.0 GB GPU; use client-resources-num-gpus=0.5 (2 a GPU)"
    )
    assert "one client alone does not fit" in share_problem(1.0, 16e9, 17.6e9)
    assert "one client alone does not fit beside the server's model" in share_problem(
        1.0, 16e9, 10e9, 8e9
    )
    # The server's evaluation model shares the first GPU with its clients.
    assert share_problem(0.5, 24e9, 10e9, 5e9) == (
        "client-resources-num-gpus=0.5 places 2 clients on each GPU, each planned at 10.0 GB "
        "and the server's evaluation model at 5.0 GB: 25.0 GB on a 24.0 GB GPU; use "
        "client-resources-num-gpus=1 (1 a GPU)"
    )


def test_a_client_and_the_server_are_planned_as_the_run_configures_them() -> None:
    small, server = planned_bytes(ROOT, ["--run-config", "model.name='tiny-llama'"])
    bigger, _ = planned_bytes(  # flwr run's short name for the option, as fedtune run takes it
        ROOT, ["-c", "model.name='tiny-llama' train.batch-size=64 model.max-length=256"]
    )
    assert CUDA_CONTEXT_BYTES < small < bigger
    assert planned_bytes(ROOT, ["--run-config", "model.name='tiny-llama'"]) == (small, server)
    assert planned_bytes(ROOT, ["-c", "model.name='tiny-llama'"])[0] == small
    # The server holds the model and a no-grad forward at eval.batch-size: more examples, more.
    assert server > 0
    _, larger = planned_bytes(ROOT, ["-c", "model.name='tiny-llama' eval.batch-size=256"])
    assert larger > server


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without GPU")
@pytest.mark.parametrize("key", ["client-resources-num-gpus", "client_resources_num_gpus"])
def test_the_share_is_read_in_either_spelling_flwr_takes(key) -> None:
    line = check_gpu_share(ROOT, ["--federation-config", f"num-supernodes=4 {key}=0.5"])
    assert line is not None and "no CUDA GPU" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for a machine without GPU")
def test_a_gpu_share_without_a_gpu_is_refused_before_the_run_starts(tmp_path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "federated.cli.main",
            "run",
            str(ROOT),
            "--federation-config",
            "num-supernodes=4 client-resources-num-gpus=0.25",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "fedtune run: client-resources-num-gpus=0.25: this machine has no CUDA GPU that torch "
        "can use, so Ray would wait forever to place a client; leave it out to train on the CPU"
    )
