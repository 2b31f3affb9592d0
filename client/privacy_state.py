"""Where a node keeps its data sources' lifetime privacy ledgers, so that nothing can reset them.

Under the node's state folder (``client.node_files``)::

    privacy/ledgers/<source>.json   one data source's lifetime ledger
    privacy/trained/<source>        the index: one file for each source that has trained here

A ledger is written, and read back, before anything it accounts leaves the node, then its index
entry. The index is what turns a lost ledger into a refusal instead of a fresh budget: a source
that trained before and has no readable ledger (deleted, corrupted, or a folder where a file
should be) does not train again until the file is restored. Flower's node state holds the same
index for the process's life. A state folder that is gone altogether, index and all, cannot be
told from a new node: keep it with the data.

Updates are read-modify-write under a lock on the ledger, so two runs on one node that train on
one source at once add to it in turn and lose nothing.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from logging import INFO

from flwr.app import ConfigRecord, Context
from flwr.common import log

from client.data_source import DataSource
from client.node_files import state_root
from federated.atomic_file import replace_file
from federated.node_state import PrivacyStateError, index_folder, ledger_folder, read_ledger
from federated.privacy.lifetime_ledger import DeviceCeilings, LifetimeLedger
from federated.protocol import message_keys as keys


class PrivacyStore:
    """One data source's lifetime ledger on this node: its file, its index entry, its lock."""

    def __init__(self, context: Context, source: DataSource, ceilings: DeviceCeilings) -> None:
        root = state_root(context)
        self.source, self.ceilings = source, ceilings
        self.path = ledger_folder(root) / f"{source.id}.json"
        self.entry = index_folder(root) / source.id
        self.node_state = context.state

    def _indexed(self) -> bool:
        record = self.node_state.config_records.get(keys.DP_STATE)
        in_process = record is not None and self.source.id in list(record[keys.DP_STATE])
        return in_process or self.entry.exists()

    def _load(self) -> LifetimeLedger:
        if self.path.exists():
            try:
                return read_ledger(self.path)
            except PrivacyStateError as err:
                raise PrivacyStateError(
                    f"record-level DP: {err}; it may hold privacy already spent, so this client "
                    "does not train: restore the file"
                ) from None
        if self._indexed():
            raise PrivacyStateError(
                f"record-level DP: {self.source.label} trained on this node before, but its "
                f"privacy ledger {self.path} is missing; this client does not train on it "
                "again until the file is restored"
            )
        log(
            INFO,
            "record-level DP: a new privacy ledger for %s in %s",
            self.source.label,
            self.path.parent,
        )
        return LifetimeLedger(self.source.id, self.source.label)

    def _save(self, ledger: LifetimeLedger) -> None:
        """Write the ledger and read it back, then its index entry; only then may what it
        accounts be released."""
        ledger.label, ledger.ceilings = self.source.label, self.ceilings
        text = json.dumps(ledger.to_json(), sort_keys=True)
        try:
            replace_file(self.path, text.encode())
            written = self.path.read_text()
            if not self.entry.exists():
                replace_file(self.entry, self.source.label.encode())
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
        record = self.node_state.config_records.get(keys.DP_STATE)
        known = list(record[keys.DP_STATE]) if record is not None else []
        if self.source.id not in known:
            self.node_state[keys.DP_STATE] = ConfigRecord({keys.DP_STATE: [*known, self.source.id]})

    @contextmanager
    def update(self) -> Iterator[LifetimeLedger]:
        """The ledger, locked against other processes, saved when the block ends without an
        error (a refusal raised inside leaves it as it was)."""
        lock_path = self.path.with_suffix(".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            lock = lock_path.open("a")
        except OSError as err:
            raise PrivacyStateError(
                f"record-level DP: cannot lock this node's privacy ledger {lock_path} ({err}); "
                "set the node config's state-dir to a writable folder"
            ) from None
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            ledger = self._load()
            yield ledger
            self._save(ledger)
