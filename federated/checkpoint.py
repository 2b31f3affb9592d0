"""Everything a run needs to go on after its server process dies, written after each round.

One safetensors file holds the tensors (the global model and each strategy's tensor state) and,
in its metadata, the rest as JSON: the round, the run config, the run key clients file their
state under, the strategy's other state and the digests of accepted updates. One file replaced
with ``os.replace`` is all or nothing: a kill at any moment leaves the last complete checkpoint.
``checkpoint.json`` repeats the metadata for people to read; resuming reads only the safetensors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from federated.atomic_file import replace_file
from federated.results import CHECKPOINT_INFO

CHECKPOINT_FILE = "checkpoint.safetensors"
# server.keep-checkpoints: every round's, as round-<N>.safetensors.
ROUND_CHECKPOINTS = "checkpoints"
_METADATA_KEY = "fedtune"
_VERSION = 2


class CheckpointError(ValueError):
    """The folder holds no checkpoint fedtune can resume from."""


@dataclass(frozen=True)
class Checkpoint:
    """A run after ``round``: tensors, and JSON-able state beside them."""

    round: int
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]


def save_checkpoint(folder: Path, checkpoint: Checkpoint, *, keep: bool = False) -> Path:
    """Replace the run's checkpoint, atomically; with ``keep``, keep this round's as well."""
    path = folder / CHECKPOINT_FILE
    tmp = folder / (CHECKPOINT_FILE + ".tmp")
    info = {"version": _VERSION, "round": checkpoint.round, **checkpoint.state}
    # Strategies may hold one tensor under two names (flexlora's head); safetensors refuses that.
    tensors = {k: v.detach().clone().contiguous() for k, v in checkpoint.tensors.items()}
    save_file(tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(info, sort_keys=True)})
    if keep:
        kept = round_checkpoint(folder, checkpoint.round)
        kept.parent.mkdir(exist_ok=True)
        kept.unlink(missing_ok=True)  # a resumed run records the rounds after its checkpoint again
        os.link(tmp, kept)  # the same file: os.replace below gives the last one a new name only
    os.replace(tmp, path)
    replace_file(
        folder / CHECKPOINT_INFO, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    )
    return path


def round_checkpoint(folder: Path, server_round: int) -> Path:
    """Where server.keep-checkpoints keeps round ``server_round``'s checkpoint."""
    return folder / ROUND_CHECKPOINTS / f"round-{server_round}.safetensors"


def kept_rounds(folder: Path) -> list[int]:
    """The rounds whose checkpoints ``folder`` keeps (server.keep-checkpoints), in order."""
    names = (folder / ROUND_CHECKPOINTS).glob("round-*.safetensors")
    stems = (p.name.removeprefix("round-").removesuffix(".safetensors") for p in names)
    return sorted(int(s) for s in stems if s.isdigit())


def load_checkpoint(folder: Path) -> Checkpoint:
    """The last checkpoint written in ``folder``; a ``CheckpointError`` saying why not."""
    return read_checkpoint(folder / CHECKPOINT_FILE)


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint in the file ``path``; a ``CheckpointError`` saying why not."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent} holds no {path.name}: nothing to resume from")
    try:
        with safe_open(str(path), framework="pt") as handle:
            info = json.loads((handle.metadata() or {})[_METADATA_KEY])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as err:  # noqa: BLE001 - safetensors raises its own types for a bad file
        raise CheckpointError(f"{path} cannot be read ({err})") from None
    if not isinstance(info, Mapping) or info.get("version") != _VERSION:
        raise CheckpointError(f"{path} was written by another version of fedtune")
    state = {k: v for k, v in info.items() if k not in ("version", "round")}
    return Checkpoint(int(info["round"]), tensors, state)


def kept_before(server_round: int) -> str:
    """What a run that stops before ``server_round`` finishes leaves to resume from."""
    if server_round > 1:
        return f"the model of round {server_round - 1} is the run's last checkpoint"
    return "no round finished, so there is no checkpoint to resume from"
