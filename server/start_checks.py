"""What the server checks before any client trains, so that bad input stops the run at start
with one line instead of every client failing every round.

The run config, the data file and the model are checked when the ServerApp starts (the config's
own checks, ``federated.model.workspace``'s loaders); here, that results can be written where
the run writes them, and once the nodes have connected: that enough of them did and said which data
partition they hold, and that the data splits across them with something to train on for each.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from logging import INFO
from pathlib import Path

from flwr.common import log
from flwr.serverapp import Grid

from federated.config import ConfigError, RunConfig
from federated.model.workspace import client_indices
from server.node_partitions import NodePartitions

_WAIT_REPORT_SECONDS = 10.0


class RunFailure(RuntimeError):
    """The run cannot go on; the message is one line for the user. Raised from the ServerApp,
    it makes Flower record the run as failed."""


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    """The connected nodes once there are ``minimum`` of them; a ``RunFailure`` after
    ``timeout`` seconds (0: wait forever)."""
    started = time.monotonic()
    reported = started
    while len(nodes := sorted(grid.get_node_ids())) < minimum:
        waited = time.monotonic() - started
        if timeout and waited > timeout:
            raise RunFailure(
                f"only {len(nodes)} of the {minimum} nodes strategy.min-available-nodes asks for "
                f"connected within server.node-wait-timeout ({timeout:g} s): start more "
                "SuperNodes (in simulation: num-supernodes) or lower "
                "strategy.min-available-nodes"
            )
        if time.monotonic() - reported > _WAIT_REPORT_SECONDS:
            log(INFO, "waiting for nodes: %d of %d connected", len(nodes), minimum)
            reported = time.monotonic()
        time.sleep(0.5)
    return nodes


def check_partitions(
    refused: Mapping[int, str], partitions: NodePartitions, config: RunConfig
) -> None:
    """Enough nodes said soundly which partition they hold; else the first refusal, in one line
    (``refused``: what ``NodePartitions.learn`` returned for the nodes connected at start)."""
    minimum = config.strategy.min_available_nodes
    if len(partitions.of) >= max(minimum, 1):
        return
    node, reason = min(refused.items(), default=(None, "no node answered"))
    raise RunFailure(
        f"{len(partitions.of)} of the {minimum} nodes strategy.min-available-nodes asks for "
        f"said which data partition they hold (node {node}: {reason})"
    )


def check_split(config: RunConfig, num_partitions: int) -> None:
    """The data splits into the ``num_partitions`` the nodes hold, each partition with a
    training example, and a held-out one where clients evaluate."""
    data = config.data
    try:
        parts = [client_indices(config, p, num_partitions) for p in range(num_partitions)]
    except ValueError as err:
        raise RunFailure(
            f"run config 'data.partitioner' = {data.partitioner!r}: the data cannot be split "
            f"across {num_partitions} clients ({err})"
        ) from None
    evaluates = config.strategy.fraction_evaluate > 0 and not config.dp.quiet_clients
    for partition, (train, held_out) in enumerate(parts):
        if not train or (evaluates and not held_out):
            which = "training" if not train else "held-out"
            raise RunFailure(
                f"partition {partition} of {num_partitions} gets no {which} example from "
                f"{data.name!r} (split {data.partitioner!r}): use fewer clients or more data"
            )


def check_writable(folder: Path, key: str) -> None:
    """Files can be written in ``folder`` (made if missing): a path under a regular file, or on
    a read-only or full disk, stops the run before any node trains, in one line."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".fedtune-write-check-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
    except OSError as err:
        raise ConfigError(
            f"run config '{key}': results cannot be written in {folder} ({err.strerror or err})"
        ) from None
