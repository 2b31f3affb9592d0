"""Several simulated clients on one GPU, checked before ``fedtune run`` starts the simulation.

Flower's ``client-resources-num-gpus`` (``--federation-config``) gives each Ray actor a share of a
GPU: 0.25 puts four clients on each. Ray places actors by that number alone, whatever their
memory: too many on one GPU run out of memory mid-run, and a share on a machine without a GPU
leaves every actor waiting for one forever. The run's job is planned as ``fedtune plan`` plans
it (its model's config on torch's meta device) against the GPU torch sees, with the server's
evaluation model beside the clients on the first GPU (a simulation's ServerApp computes on the
first device torch sees), and a share that cannot hold them is refused with the share that can.

Only the share given with ``--federation-config`` (either spelling Flower takes) is checked: a
share stored on the SuperLink (``flwr federation simulation-config``) is not seen here.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import replace
from pathlib import Path

FEDERATION_CONFIG = "--federation-config"
NUM_GPUS = "client-resources-num-gpus"
NUM_GPUS_SPELLINGS = (NUM_GPUS, NUM_GPUS.replace("-", "_"))  # flwr run maps "-" to "_"


def _values(options: list[str], flags: tuple[str, ...]) -> dict[str, object]:
    """The key=value pairs of every option named by one of ``flags``, as flwr parses them."""
    from flwr.common.config import parse_config_args

    given = [options[i + 1] for i, arg in enumerate(options[:-1]) if arg in flags] + [
        arg.partition("=")[2] for arg in options if arg.startswith(tuple(f"{f}=" for f in flags))
    ]
    return parse_config_args(given) if given else {}


def clients_per_gpu(num_gpus: float) -> int:
    """How many actors Ray places on one GPU at this share (at least one)."""
    return max(1, math.floor(1 / num_gpus + 1e-9))


def share_problem(
    num_gpus: float, gpu_bytes: float, client_bytes: float, server_bytes: float = 0.0
) -> str | None:
    """Why ``num_gpus`` per client overfills a GPU of ``gpu_bytes`` that also holds the
    server's ``server_bytes``, or None."""
    placed = clients_per_gpu(num_gpus)
    if placed * client_bytes + server_bytes <= gpu_bytes:
        return None
    fit = math.floor((gpu_bytes - server_bytes) / client_bytes)
    beside = " beside the server's model" if server_bytes else ""
    advice = (
        f"use {NUM_GPUS}={1 / fit:g} ({fit} a GPU)"
        if fit >= 1
        else f"one client alone does not fit{beside}: see fedtune plan for what would"
    )
    server = (
        f" and the server's evaluation model at {server_bytes / 1e9:.1f} GB" if server_bytes else ""
    )
    total = placed * client_bytes + server_bytes
    return (
        f"{NUM_GPUS}={num_gpus:g} places {placed} clients on each GPU, each planned at "
        f"{client_bytes / 1e9:.1f} GB{server}: {total / 1e9:.1f} GB on a "
        f"{gpu_bytes / 1e9:.1f} GB GPU; {advice}"
    )


def check_gpu_share(app: Path, options: list[str]) -> str | None:
    """The line that refuses this simulation's GPU share, or None (no share, or it fits)."""
    given = _values(options, (FEDERATION_CONFIG,))
    share = float(next((given[k] for k in NUM_GPUS_SPELLINGS if k in given), 0) or 0)
    if share <= 0:
        return None
    import torch

    if not torch.cuda.is_available():
        return (
            f"{NUM_GPUS}={share:g}: this machine has no CUDA GPU that torch can use, so Ray "
            "would wait forever to place a client; leave it out to train on the CPU"
        )
    gpu_bytes = torch.cuda.get_device_properties(0).total_memory
    client, server = planned_bytes(app, options)
    return share_problem(share, gpu_bytes, client, server)


def planned_bytes(app: Path, options: list[str]) -> tuple[float, float]:
    """One client's planned GPU memory for the run the options configure, and the server's
    evaluation model's (a no-grad forward at eval.batch-size, counted as a zeroth-order step's
    forward is); each with the CUDA context of its own process."""
    from flwr.common.config import flatten_dict

    from federated.cli.run_config_merge import RUN_CONFIG
    from federated.config import parse_run_config
    from federated.devices.job_plan import Device, Job
    from federated.devices.planner import as_mode
    from federated.model.workspace import numerics_of

    pyproject = tomllib.loads((app / "pyproject.toml").read_text())
    defaults = flatten_dict(pyproject["tool"]["flwr"]["app"]["config"])
    config = parse_run_config({**defaults, **_values(options, RUN_CONFIG)})
    numerics = numerics_of(config)
    job = Job(config, config.train.batch_size, config.model.max_length, numerics)
    evaluation = Job(
        as_mode(config, "zo"),
        config.eval.batch_size,
        config.model.max_length,
        replace(numerics, gradient_checkpointing=False),
    )
    gpu = Device("gpu", float("inf"), True)
    return gpu.need(job.estimate()), gpu.need(evaluation.estimate())
