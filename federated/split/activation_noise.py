"""Noise on what a split device sends: each example's cut-layer activations clipped to an L2
norm of at most ``clip`` and Gaussian noise of standard deviation ``multiplier * clip`` added
to every entry (the Gaussian mechanism on one example's activations; the server sees one such
release per example each time the example crosses the cut). It is not accounted as
differential privacy: what it buys is measured against an inversion attack instead."""

from __future__ import annotations

import torch


def clipped(hidden: torch.Tensor, clip: float) -> torch.Tensor:
    """Each example's activations (batch first) scaled down to an L2 norm of at most ``clip``;
    differentiable, so the prompt's gradient flows through the same scaling."""
    norms = hidden.flatten(1).norm(dim=1).clamp(min=1e-12)
    scale = (clip / norms).clamp(max=1.0)
    return hidden * scale.view(-1, *([1] * (hidden.dim() - 1)))


def noise_like(
    hidden: torch.Tensor, clip: float, multiplier: float, generator: torch.Generator
) -> torch.Tensor:
    """The noise added to ``hidden``: N(0, (multiplier * clip)^2) per entry."""
    draw = torch.randn(hidden.shape, generator=generator, dtype=torch.float32)
    return (draw * (multiplier * clip)).to(hidden.dtype)
