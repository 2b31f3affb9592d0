"""Which weights zeroth-order steps move: all of them, the LoRA factors, or a sparse subset.

Every party derives the same targets from the same base weights, in the same order, without
talking: that order is the order in which perturbations are drawn.
"""

from __future__ import annotations

import math

import torch

from federated.zo.perturbation import Target

PARAM_SETS = ("full", "lora", "sparse")  # sensitive: from a mask, `federated.zo.sensitive`


def zo_targets(
    model: torch.nn.Module, param_set: str, *, sparse_fraction: float = 0.01
) -> list[Target]:
    """The targets of ``param_set`` in ``model``, sorted by parameter name.

    - ``full``: every parameter (tied weights once).
    - ``lora``: the trainable parameters of a peft model: LoRA factors and a classifier head.
    - ``sparse``: of each matrix, the ``sparse_fraction`` of entries largest in magnitude, and
      every vector (norms, biases) whole. Magnitude needs no data, so all parties agree on it;
      large weights are the ones a small relative change moves the output most.
    """
    if param_set not in PARAM_SETS:
        raise ValueError(
            f"zeroth-order parameter set {param_set!r} is not one of {', '.join(PARAM_SETS)}"
        )
    named = sorted(model.named_parameters(), key=lambda item: item[0])  # tied weights appear once
    if param_set == "lora":
        targets = [Target(p) for _, p in named if p.requires_grad]
        if not targets:
            raise ValueError("zo.params = lora needs a model with LoRA factors")
        return targets
    if param_set == "full":
        return [Target(p) for _, p in named]
    if not 0.0 < sparse_fraction <= 1.0:
        raise ValueError(f"sparse fraction must be in (0, 1], got {sparse_fraction}")
    targets = []
    for _, param in named:
        if param.dim() < 2:
            targets.append(Target(param))
            continue
        keep = max(1, math.ceil(sparse_fraction * param.numel()))
        indices = torch.topk(param.detach().abs().flatten(), keep, sorted=False).indices
        targets.append(Target(param, torch.sort(indices).values))
    return targets


def snapshot(targets: list[Target]) -> list[torch.Tensor]:
    """Copies of the targets' current values (whole tensors), to rebuild from later."""
    return [t.tensor.detach().clone() for t in targets]


def restore_(targets: list[Target], values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for target, value in zip(targets, values, strict=True):
            target.tensor.copy_(value)
