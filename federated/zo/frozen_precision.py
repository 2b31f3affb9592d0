"""Untrained weights in a lower precision: the frozen bulk of a sparse or sensitive run.

Guo et al. (2024) keep the weights that zeroth-order steps never move quantized on the device:
with 0.1% of the entries trained, the other 99.9% need no float32. Here every matrix is stored
in ``zo.frozen-dtype`` (bfloat16 or float16) and the entries that train live beside it as one
float32 vector per matrix. A forward pass materialises one matrix at a time in float32 (torch's
parametrizations: the stored matrix, upcast, with the trained entries written over it), so
compute and the trained entries keep float32 while the model's resident weights shrink to
about half; loading still reads the float32 checkpoint, converted once loaded.

The trained entries replace the (matrix, indices) targets in place, in the same order, as a
vector indexed at all its entries: a seed draws the same numbers for it as for the matrix's
indexed entries, and replay adds them to it in the same order, so a client's steps, its replay
and the server's sums are those of the float32 model, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from federated.zo.perturbation import Target

FROZEN_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class SparseOverlay(nn.Module):
    """A stored low-precision matrix as float32, with the trained entries' float32 values."""

    def __init__(self, indices: torch.Tensor | None, values: torch.Tensor | None) -> None:
        super().__init__()
        self.indices, self.values = indices, values  # plain tensors: not parameters

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        weight = stored.to(torch.float32)
        if self.indices is not None:
            weight.view(-1).index_copy_(0, self.indices, self.values)
        return weight


def _holders(model: nn.Module, param: nn.Parameter) -> list[tuple[nn.Module, str]]:
    """Every (module, attribute) that holds ``param``: a tied matrix has several."""
    return [
        (module, name)
        for module in model.modules()
        for name, p in module.named_parameters(recurse=False)
        if p is param
    ]


def store_frozen_(
    model: nn.Module, targets: list[Target], dtype: str, keep: Iterable[nn.Parameter] = ()
) -> tuple[list[Target], int]:
    """In place: every matrix but those in ``keep`` stored in ``dtype``, its targeted entries as
    a float32 vector. Returns the new targets (same order, same draws) and the bytes saved
    (the matrices' halved storage less the vectors of trained entries)."""
    low = FROZEN_DTYPES[dtype]
    kept = {id(p) for p in keep}
    indexed = {id(t.tensor): t for t in targets if t.indices is not None}
    whole = {id(t.tensor) for t in targets if t.indices is None}
    replaced: dict[int, Target] = {}
    saved = 0
    matrices = {id(p): p for p in model.parameters() if p.dim() >= 2}  # tied matrices once
    for key, param in matrices.items():
        if key in kept or key in whole:
            continue
        target = indexed.get(key)
        values = None
        if target is not None:
            values = param.detach().reshape(-1)[target.indices].to(torch.float32).clone()
            replaced[key] = Target(values, torch.arange(values.numel()))
        overlay = SparseOverlay(None if target is None else target.indices, values)
        for module, name in _holders(model, param):
            parametrize.register_parametrization(module, name, overlay, unsafe=True)
        param.data = param.data.to(low)
        saved += param.numel() * (4 - param.element_size())
        saved -= 0 if values is None else values.numel() * 4
    for param in model.parameters():
        if id(param) not in matrices or id(param) in kept:
            # A copy of its own: a tensor still on the checkpoint's memory map keeps the whole
            # file mapped, and every float32 page the conversion read stays resident.
            param.data = param.data.clone()
    return [replaced.get(id(t.tensor), t) for t in targets], saved
