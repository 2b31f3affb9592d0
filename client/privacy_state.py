"""What a record-level DP client has released in a run, kept where a restart cannot lose it.

The state (the privacy ledger and the noised record count) lives in Flower's node state and in a
file on the node. Flower's node state dies with the SuperNode process; the file does not, so a
restarted SuperNode carries on with what it has spent instead of starting a fresh budget. The
file is written, and read back, before anything it accounts leaves the node; a file that exists
but cannot be read stops the client from training: it may hold spending the client would
otherwise forget.

The file is ``<dir>/run-<run id>-partition-<id>-of-<n>.json``, where ``<dir>`` is the node
config's ``privacy-state-dir``, else ``$FEDTUNE_STATE_DIR/privacy``, else
``~/.local/state/fedtune/privacy``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from flwr.app import ConfigRecord, Context

from federated import message_keys as keys
from federated.privacy.accounting import PrivacyLedger

STATE_DIR_ENV = "FEDTUNE_STATE_DIR"
NODE_CONFIG_KEY = "privacy-state-dir"
_VERSION = 1


class PrivacyStateError(RuntimeError):
    """The node's privacy state cannot be read or written: the client must not train."""


@dataclass
class PrivacyState:
    """Everything a client has released that the accountant covers."""

    ledger: PrivacyLedger = field(default_factory=PrivacyLedger)
    noised_count: int | None = None  # the record count it released, once per run

    def to_json(self) -> dict:
        return {
            "version": _VERSION,
            "events": [list(event) for event in self.ledger.events],
            "noised-count": self.noised_count,
        }

    @classmethod
    def from_json(cls, data: dict) -> PrivacyState:
        if data.get("version") != _VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        events = [(float(n), float(q), int(s)) for n, q, s in data["events"]]
        count = data["noised-count"]
        return cls(PrivacyLedger(events), None if count is None else int(count))


def state_dir(context: Context) -> Path:
    configured = context.node_config.get(NODE_CONFIG_KEY)
    if configured:
        return Path(str(configured)).expanduser()
    root = os.environ.get(STATE_DIR_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".local" / "state" / "fedtune"
    return base / "privacy"


class PrivacyStore:
    """One node's privacy state in one run: in the node state and in its file."""

    def __init__(self, context: Context, partition_id: int, num_partitions: int) -> None:
        name = f"run-{context.run_id}-partition-{partition_id}-of-{num_partitions}.json"
        self.path = state_dir(context) / name
        self.node_state = context.state

    def _read_file(self) -> PrivacyState | None:
        if not self.path.exists():
            return None
        try:
            return PrivacyState.from_json(json.loads(self.path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise PrivacyStateError(
                f"record-level DP: cannot read this node's privacy ledger {self.path} ({err}); "
                "it may hold privacy already spent, so this client does not train: restore the "
                "file, or leave this run"
            ) from None

    def load(self) -> PrivacyState:
        """The state after the last release: from the file when there is one (it is written
        first), else from the node state, else empty (the client's first private round)."""
        on_disk = self._read_file()
        if on_disk is not None:
            return on_disk
        record = self.node_state.config_records.get(keys.DP_STATE)
        if record is None:
            return PrivacyState()
        return PrivacyState.from_json(json.loads(str(record[keys.DP_STATE])))

    def save(self, state: PrivacyState) -> None:
        """Write the state and read it back; only then may what it accounts be released."""
        text = json.dumps(state.to_json(), sort_keys=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path)
            written = self.path.read_text()
        except OSError as err:
            raise PrivacyStateError(
                f"record-level DP: cannot write this node's privacy ledger {self.path} ({err}); "
                "nothing is released without it: set the node config's privacy-state-dir to a "
                "writable folder"
            ) from None
        if written != text:
            raise PrivacyStateError(
                f"record-level DP: the privacy ledger {self.path} did not read back as written"
            )
        self.node_state[keys.DP_STATE] = ConfigRecord({keys.DP_STATE: text})
