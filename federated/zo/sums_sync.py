"""Keeping a client's copy of the seed sums in step with the server's, in few bytes.

The server numbers each state of the sums (a version) and remembers which version each node
confirmed last. A node it knows gets only the sums that changed since; any other node (new,
restarted, or out of step) gets the sums from scratch, which every party knows to be all zeros:
only the seeds that have moved. Either list goes as (index, sum) pairs, or as all K sums where
that is smaller (when more than half of them changed). A client applies changes only onto the
exact version they were computed from, and refuses otherwise, so it can never replay a wrong model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from flwr.app import ConfigRecord, RecordDict

from federated.protocol import message_keys as keys
from federated.protocol.wire import record_to_tensors, tensors_to_record

FULL = -1  # base version of a message that replaces whatever sums a client holds


class OutOfSync(RuntimeError):
    """The changes were computed against a version this client does not hold."""


@dataclass
class SumsLedger:
    """The server's side: versions of the sums, and the version each node holds."""

    sums: torch.Tensor
    version: int = 0
    held: dict[int, int] = field(default_factory=dict)  # node -> version
    history: dict[int, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.history[self.version] = self.sums.clone()

    def advance(self, sums: torch.Tensor) -> None:
        self.version += 1
        self.sums = sums
        self.history[self.version] = sums.clone()
        kept = set(self.held.values()) | {self.version}
        self.history = {v: t for v, t in self.history.items() if v in kept}

    def payload(self, node: int, changes_only: bool) -> tuple[dict[str, torch.Tensor], int]:
        """What node gets now, and the base version it applies to (FULL: onto zero sums).

        ``changes_only=False`` always sends all K sums, as FedKSeed does.
        """
        if not changes_only:
            return {keys.SEED_SUMS: self.sums}, FULL
        base = self.held.get(node)
        if base is None or base not in self.history:
            base, reference = FULL, torch.zeros_like(self.sums)
        else:
            reference = self.history[base]
        changed = torch.nonzero(self.sums != reference, as_tuple=False).flatten()
        if 2 * len(changed) >= len(self.sums):  # a pair costs two sums' bytes
            return {keys.SEED_SUMS: self.sums}, FULL
        pairs = {
            keys.CHANGED_INDICES: changed.to(torch.int32),
            keys.CHANGED_SUMS: self.sums[changed],
        }
        return pairs, base

    def confirm(self, node: int, version: int) -> None:
        self.held[node] = version

    def forget(self, node: int) -> None:
        self.held.pop(node, None)


def client_sums(content: RecordDict, state: RecordDict, pool_size: int) -> tuple[torch.Tensor, int]:
    """The sums a message brings this client to, and their version; updates the node state."""
    config = content.config_records[keys.CONFIG]
    version, base = int(config[keys.SUMS_VERSION]), int(config[keys.SUMS_BASE_VERSION])
    arrays = record_to_tensors(content.array_records[keys.ARRAYS])
    if keys.SEED_SUMS in arrays:
        sums = arrays[keys.SEED_SUMS]
    elif base == FULL:
        sums = torch.zeros(pool_size)
        sums[arrays[keys.CHANGED_INDICES].long()] = arrays[keys.CHANGED_SUMS]
    else:
        held = state.array_records.get(keys.ZO_SUMS)
        info = state.config_records.get(keys.ZO_SUMS_VERSION)
        held_version = int(info[keys.SUMS_VERSION]) if info is not None else None
        if held is None or held_version != base:
            raise OutOfSync(
                f"changes are for sums version {base}, this client holds {held_version}"
            )
        sums = record_to_tensors(held)[keys.SEED_SUMS].clone()
        sums[arrays[keys.CHANGED_INDICES].long()] = arrays[keys.CHANGED_SUMS]
    if sums.shape != (pool_size,):
        raise ValueError(f"expected {pool_size} seed sums, got {tuple(sums.shape)}")
    state[keys.ZO_SUMS] = tensors_to_record({keys.SEED_SUMS: sums})
    state[keys.ZO_SUMS_VERSION] = ConfigRecord({keys.SUMS_VERSION: version})
    return sums, version
