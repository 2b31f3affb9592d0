"""Refuse an update the server has accepted before: a client replaying an old reply, or copying
another's. Two honest clients never send the same floating-point update, nor one client twice.

Only digests are kept (SHA-256 of the arrays' names and bytes), one per accepted update.
"""

from __future__ import annotations

import hashlib

from flwr.app import Message

from federated.protocol import message_keys as keys


def update_digest(msg: Message) -> str | None:
    """A digest of a training reply's arrays: their names, headers and bytes (None without)."""
    if msg.has_error() or keys.ARRAYS not in msg.content.array_records:
        return None
    digest = hashlib.sha256()
    record = msg.content.array_records[keys.ARRAYS]
    for name in sorted(record):
        array = record[name]
        digest.update(f"{name}|{array.dtype}|{tuple(array.shape)}|".encode())
        digest.update(array.data)
    return digest.hexdigest()


class ReplayGuard:
    """The digests of every update accepted so far in the run, with the round of each
    (``accepted``: those of the rounds before a resume)."""

    def __init__(self, accepted: dict[str, int] | None = None) -> None:
        self.accepted: dict[str, int] = {} if accepted is None else accepted

    def problem(self, digest: str | None) -> str | None:
        """Why an update of this digest (``update_digest``) is refused, or None."""
        first = self.accepted.get(digest) if digest is not None else None
        if first is None:
            return None
        return f"replays an update the server accepted in round {first}"

    def remember(self, digest: str | None, server_round: int) -> None:
        if digest is not None:
            self.accepted.setdefault(digest, server_round)
