"""A run's folder, read back: its config and the global model of its last or a kept round.

The checkpoint is what a run folder always has (written after every round, the last one
included); it holds the run config, so nothing else is needed to rebuild the run's model. A
path to one checkpoint file (``checkpoints/round-<N>.safetensors``) is taken as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from federated.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    kept_rounds,
    read_checkpoint,
    round_checkpoint,
)
from federated.config import RunConfig, parse_run_config
from federated.inference.trained_model import TrainedModel
from federated.protocol.global_model import GlobalModel
from federated.zo.workspace import MASK_FILE, forget_zo_model


@dataclass(frozen=True)
class TrainedRun:
    """What a run left, for generation, evaluation and export."""

    folder: Path
    config: RunConfig
    round: int
    model: GlobalModel
    run_key: str | None
    num_partitions: int | None


def open_run(path: Path, server_round: int | None = None) -> TrainedRun:
    """The run at ``path`` (its folder, or one of its checkpoint files) at its last round, or at
    ``server_round`` when the run kept that round's checkpoint; a ``ValueError`` in one line
    saying what is there instead."""
    path = Path(path).expanduser()
    if path.is_file():
        if server_round is not None:
            raise ValueError(f"{path} is one round's checkpoint: --round applies to a run folder")
        file, folder = path, path.parent
        if folder.name == round_checkpoint(Path(), 0).parent.name:
            folder = folder.parent
    elif server_round is None:
        file, folder = path / CHECKPOINT_FILE, path
    else:
        file, folder = round_checkpoint(path, server_round), path
        if not file.is_file():
            kept = kept_rounds(path)
            have = (
                f"it keeps rounds {', '.join(map(str, kept))}"
                if kept
                else "it keeps only its last (run with server.keep-checkpoints=true to keep each)"
            )
            raise ValueError(f"{path} has no checkpoint of round {server_round}: {have}")
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    try:
        checkpoint = read_checkpoint(file)
    except CheckpointError as err:
        raise ValueError(f"{err} (is {path} a fedtune run folder?)") from None
    try:
        config = parse_run_config(checkpoint.state["config"])
    except ValueError as err:
        raise ValueError(f"{file}: its run config does not parse in this version ({err})") from None
    model = GlobalModel.from_flat(checkpoint.tensors)
    state = checkpoint.state
    return TrainedRun(
        folder, config, checkpoint.round, model, state.get("run-key"), state.get("num-partitions")
    )


def trained_model(run: TrainedRun) -> TrainedModel:
    """The run's model architecture with ``run.model`` loaded (a sensitive zeroth-order run's
    mask read from its folder)."""
    mask = None
    if run.config.mode == "zo":
        forget_zo_model()  # a model cached in this process may hold other seeds' weights
    if run.config.mode == "zo" and run.config.zo.params == "sensitive":
        path = run.folder / MASK_FILE
        if not path.is_file():
            raise ValueError(f"{run.folder} lacks {MASK_FILE}, the entries its seeds trained")
        mask = {k: v.to(torch.int32) for k, v in load_file(str(path)).items()}
    model = TrainedModel(run.config, mask)
    model.load(run.model)
    return model
