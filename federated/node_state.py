"""Where a node keeps what outlives its processes, as its client writes it and ``fedtune ledger``
reads it: the state folder, and the lifetime privacy ledgers in it (``client.privacy_state``
keeps them; ``client.node_files`` names a run's files).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from federated.privacy.lifetime_ledger import LifetimeLedger

STATE_DIR_ENV = "FEDTUNE_STATE_DIR"


def run_file(root: Path, kind: str, key: str, partition: tuple[int, int], ext: str) -> Path:
    """The file of one ``kind`` of a node's state for its partition (id, count) in run ``key``,
    under the node's state folder ``root``."""
    partition_id, num_partitions = partition
    return root / kind / f"run-{key}-partition-{partition_id}-of-{num_partitions}.{ext}"


def default_state_root() -> Path:
    """The state folder of a node whose config names none."""
    root = os.environ.get(STATE_DIR_ENV)
    return Path(root).expanduser() if root else Path.home() / ".local" / "state" / "fedtune"


class PrivacyStateError(RuntimeError):
    """The node's privacy state cannot be read or written: the client must not train."""


def ledger_folder(root: Path) -> Path:
    return root / "privacy" / "ledgers"


def index_folder(root: Path) -> Path:
    return root / "privacy" / "trained"


def read_ledger(path: Path) -> LifetimeLedger:
    """The ledger in ``path``; one that cannot be read raises PrivacyStateError."""
    try:
        ledger = LifetimeLedger.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise PrivacyStateError(f"cannot read this node's privacy ledger {path} ({err})") from None
    if path.name != f"{ledger.source}.json":
        raise PrivacyStateError(
            f"cannot read this node's privacy ledger {path} (it holds source {ledger.source})"
        )
    return ledger
