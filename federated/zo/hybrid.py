"""Hybrid zeroth-order training: a few small modules (a classification head) learn first-order.

A fresh head is out of reach of random directions: its entries start random and carry the
whole task. Backpropagating through the head alone costs next to nothing, since autograd records
only what follows the first weight that requires a gradient, so the body's activations are
never kept and memory stays at inference level. The head's gradient is the mean of its
gradients in the two forward passes the zeroth-order step already makes (at w + εz and w − εz:
the gradient at w up to O(ε²)), and it travels as tensors, a few KB, beside the seed pairs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from federated.model.lora import HEAD_NAMES

HEAD = "head"
WIRE_PREFIX = "hybrid."  # the wire keys of hybrid tensors: this prefix and the parameter's name


def hybrid_parameters(model: nn.Module, spec: str) -> dict[str, nn.Parameter]:
    """The parameters that train first-order, by wire key: those of the modules ``spec`` names
    (comma-separated module names, matched as a name or a dotted suffix; ``head`` for the
    classification head). Of a head peft keeps two copies; the frozen original stays out."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        return {}
    wanted = list(HEAD_NAMES) if names == [HEAD] else names
    found: dict[str, nn.Parameter] = {}
    matched: set[str] = set()
    for module_name, module in model.named_modules():
        hits = {w for w in wanted if module_name == w or module_name.endswith(f".{w}")}
        params = [
            (n, p)
            for n, p in module.named_parameters(prefix=module_name)
            if ".original_module." not in n
        ]
        if hits and params:
            matched |= hits
            found.update((f"{WIRE_PREFIX}{n}", p) for n, p in params)
    if names == [HEAD] and not found:
        raise ValueError(f"the model has no classification head ({' or '.join(HEAD_NAMES)})")
    if names != [HEAD] and (missing := [n for n in names if n not in matched]):
        raise ValueError(f"no module named {missing[0]!r} with parameters")
    return dict(sorted(found.items()))


def hybrid_state(params: Mapping[str, nn.Parameter]) -> dict[str, torch.Tensor]:
    """The hybrid tensors as fp32 CPU copies, by wire key."""
    return {k: p.detach().to("cpu", torch.float32, copy=True) for k, p in params.items()}


def load_hybrid_(params: Mapping[str, nn.Parameter], tensors: Mapping[str, torch.Tensor]) -> None:
    """Set the hybrid parameters to the global values ``tensors`` holds (by wire key)."""
    missing = sorted(set(params) - set(tensors))
    if missing:
        raise ValueError(f"the message lacks the hybrid tensor {missing[0]!r}")
    with torch.no_grad():
        for key, param in params.items():
            param.copy_(tensors[key])


def hybrid_step_(params: Mapping[str, nn.Parameter], lr: float, passes: int) -> None:
    """One SGD step along the mean of the gradients that ``passes`` backward passes summed."""
    with torch.no_grad():
        for param in params.values():
            if param.grad is not None:
                param.add_(param.grad, alpha=-lr / passes)
                param.grad = None
