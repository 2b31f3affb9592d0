"""Where and how a process computes: its device (``train.device``, resolved on the machine that
runs it) and its mixed precision (``train.precision``: autocast, and a loss scaler for fp16).

Tensors cross processes as CPU float32 arrays whatever the device (`federated.model.lora`'s
``trainable_state``), and seed perturbations are drawn on the CPU (`federated.zo.perturbation`),
so a client on a GPU and a server on a CPU hold the same model.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from federated.config import ConfigError
from federated.model.numerics import DTYPES


def resolve_device(name: str) -> str:
    """``auto``: CUDA, else Apple's MPS, else the CPU; a named device must be present here."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (name == "cuda" and not cuda) or (name == "mps" and not mps):
        build = f"torch {torch.__version__}" + (
            ", a CPU-only build" if torch.version.cuda is None and name == "cuda" else ""
        )
        raise ConfigError(
            f"run config 'train.device' = {name!r}: this machine has no {name.upper()} device "
            f"that torch can use ({build}); use auto or cpu"
        )
    return name


def model_device(model: torch.nn.Module) -> torch.device:
    """The device a model computes on: that of its first parameter."""
    return next(model.parameters()).device


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Mixed precision for a forward pass on ``device``: none for fp32."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


def loss_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """fp16 needs its loss scaled so that small gradients do not underflow; bf16 has fp32's
    exponent range and needs none."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
