"""What a record-level DP client has released in a run, kept where a restart cannot lose it.

The state (the privacy ledger and the noised record count) lives in Flower's node state and in a
file on the node (``client.node_files``): ``privacy/run-<run key>-partition-<p>-of-<n>.json``
under the node's state folder. The file outlives the SuperNode process and the server's: a
restarted node or a resumed run carries on with what it has spent instead of a fresh budget. It
is written, and read back, before anything it accounts leaves the node; a file that exists but
cannot be read stops the client from training: it may hold spending the client would otherwise
forget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Context

from client.node_files import node_file
from federated import message_keys as keys
from federated.atomic_file import replace_file
from federated.privacy.accounting import PrivacyLedger

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


class PrivacyStore:
    """One node's privacy state in one run: in the node state and in its file."""

    def __init__(self, context: Context, key: str, partition: tuple[int, int]) -> None:
        self.path = node_file(context, "privacy", key, partition, "json")
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
            replace_file(self.path, text.encode())
            written = self.path.read_text()
        except OSError as err:
            raise PrivacyStateError(
                f"record-level DP: cannot write this node's privacy ledger {self.path} ({err}); "
                "nothing is released without it: set the node config's state-dir to a "
                "writable folder"
            ) from None
        if written != text:
            raise PrivacyStateError(
                f"record-level DP: the privacy ledger {self.path} did not read back as written"
            )
        self.node_state[keys.DP_STATE] = ConfigRecord({keys.DP_STATE: text})
