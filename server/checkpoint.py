"""The global trainable tensors after each round, written so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_FILE = "checkpoint.safetensors"
CHECKPOINT_INFO = "checkpoint.json"


def save_checkpoint(folder: Path, server_round: int, tensors: Mapping[str, torch.Tensor]) -> Path:
    """Replace the run's checkpoint with the tensors of ``server_round``."""
    path = folder / CHECKPOINT_FILE
    tmp = folder / (CHECKPOINT_FILE + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)
    (folder / CHECKPOINT_INFO).write_text(json.dumps({"round": server_round}) + "\n")
    return path


def load_checkpoint(folder: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """The last saved round and its tensors."""
    info = json.loads((folder / CHECKPOINT_INFO).read_text())
    return int(info["round"]), load_file(str(folder / CHECKPOINT_FILE))
