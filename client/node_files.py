"""Where a node keeps what must outlive its process: the privacy ledgers, a personal adapter.

Flower's node state dies with the SuperNode process (and with a simulation). Files do not, so
a restarted node, or a resumed run, carries on from them. They live under the node config's
``state-dir``, else ``$FEDTUNE_STATE_DIR``, else ``~/.local/state/fedtune``. A run's files are
``<kind>/run-<run key>-partition-<p>-of-<n>.<ext>``: the run key comes from the server with
every training message and stays the same when a run is resumed. The privacy ledgers belong to
the node's data, not to a run, and have their own layout (``client.privacy_state``).
"""

from __future__ import annotations

import re
from pathlib import Path

from flwr.app import Context, Message

from federated.node_state import default_state_root, run_file
from federated.protocol import message_keys as keys

NODE_CONFIG_KEY = "state-dir"
_RUN_KEY = re.compile(r"[0-9a-f]{8,64}")


def run_key(msg: Message, context: Context) -> str:
    """The run key of ``msg`` (Flower's run ID where the server sent none). A key that is not
    hex digits is refused: it names files on this node."""
    config = msg.content.config_records.get(keys.CONFIG)
    key = config.get(keys.RUN_KEY) if config is not None else None
    if key is None:
        return f"flwr{context.run_id}"
    if not isinstance(key, str) or not _RUN_KEY.fullmatch(key):
        raise ValueError(f"the server's run key {str(key)[:80]!r} is not 8 to 64 hex digits")
    return key


def state_root(context: Context) -> Path:
    configured = context.node_config.get(NODE_CONFIG_KEY)
    return Path(str(configured)).expanduser() if configured else default_state_root()


def node_file(context: Context, kind: str, key: str, partition: tuple[int, int], ext: str) -> Path:
    """The file of one ``kind`` of state of this node's partition (id, count) in run ``key``."""
    return run_file(state_root(context), kind, key, partition, ext)
