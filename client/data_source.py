"""Which data a node trains on, as its lifetime privacy ledger names it.

A node's privacy budget belongs to its data, not to a run: every run that trains on the same
records spends from one ledger (``federated.privacy.lifetime_ledger``). So the ledger is
keyed by the data's identity, never by anything the server sends:

- a node's own ``data-file``: the SHA-256 of the file's bytes. A renamed or moved copy is the
  same source; an edited file is a new one, with a fresh ledger (a digest cannot tell which
  records the two files share). The digest is of the bytes, not of the records as a run reads
  them, because the run config (the server's) chooses the columns and the held-out split: a
  digest of what it reads could be changed by the server.
- a built-in partition (simulation): the data settings, the task, the seed and the partition,
  which together determine its records. These come from the run config, so in simulation the
  identity is only as fixed as the config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from client.node_config import NodeSettings
from federated.config import RunConfig


@dataclass(frozen=True)
class DataSource:
    """A data source's identity (``id``, which names its ledger file) and how people read it."""

    id: str
    label: str


@lru_cache(maxsize=4)
def _file_digest(path: Path, stamp: tuple[int, int]) -> str:
    """The SHA-256 of the file as it was at ``stamp`` (change time, size): an edit reads anew."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def data_source(config: RunConfig, node: NodeSettings) -> DataSource:
    """The source of the records ``node`` trains on in the run of ``config``. A data file it
    cannot read raises ValueError with one line naming it."""
    path = node.data_file
    if path is not None:
        try:
            stat = path.stat()
            digest = _file_digest(path, (stat.st_mtime_ns, stat.st_size))
        except OSError as err:
            raise ValueError(f"node config 'data-file' = '{path}': {err.strerror or err}") from None
        return DataSource(f"file-{digest}", f"data file {path.resolve()} (sha256 {digest[:12]})")
    settings = {
        "data": dataclasses.asdict(config.data),
        "task": config.task,
        "seed": config.seed,
        "partition": [node.partition_id, node.num_partitions],
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    label = (
        f"{config.data.name} partition {node.partition_id} of {node.num_partitions} "
        f"({config.data.partitioner}, seed {config.seed}; settings {digest[:12]})"
    )
    return DataSource(f"partition-{digest}", label)
