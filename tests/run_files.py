"""Reading a finished run's folder in end-to-end tests: its rounds, what must repeat of them,
and its checkpoint's tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from federated.results import METRICS_FILE, read_rounds


def rounds(folder: Path) -> list[dict]:
    return read_rounds(folder / METRICS_FILE)


def outcome(record: dict) -> dict:
    """What must repeat of a round: its losses and accuracies and, by partition, who trained
    and what each reported (times, bytes and node IDs may differ)."""
    clients = [
        (
            c["partition_id"],
            c["status"],
            c["train_loss"],
            c["num_examples"],
            c["epsilon"],
            c["eval_status"],
        )
        for c in record.get("clients", [])
    ]
    losses = {k: v for k, v in record.items() if k.endswith(("_loss", "_accuracy"))}
    return {"round": record["round"], **losses, "clients": clients}


def checkpoint_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """The global model and the strategy's state after the run's last round."""
    return load_file(str(folder / "checkpoint.safetensors"))


def assert_same_tensors(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rel: float = 0.0
) -> None:
    """Equal bit for bit, or within ``rel`` of the larger entry of each tensor."""
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        scale = float(tensor.abs().max()) if tensor.numel() else 0.0
        assert torch.allclose(tensor, b[name], rtol=0.0, atol=rel * scale), name


def assert_same_outcomes(a: list[dict], b: list[dict], rel: float = 0.0) -> None:
    """The rounds' ``outcome`` equal, numbers within ``rel`` of each other."""

    def numbers_close(x: object, y: object) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return x == pytest.approx(y, rel=rel)
        if isinstance(x, list | tuple) and isinstance(y, list | tuple):
            return len(x) == len(y) and all(map(numbers_close, x, y))
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(numbers_close(x[k], y[k]) for k in x)
        return x == y

    assert numbers_close([outcome(r) for r in a], [outcome(r) for r in b]), (a, b)
