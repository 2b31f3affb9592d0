"""The FLOPs of one local step, counted on the run's own model on torch's meta device.

torch's ``FlopCounterMode`` counts every matmul and attention of a forward (and, for LoRA, of
the backward, which through frozen weights computes input gradients only: about one more
forward) from shapes alone. A zeroth-order step is two forwards. A split device counts only
what it computes itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from federated.config import RunConfig
from federated.devices.memory_estimate import meta_batch, skeleton
from federated.devices.split_estimate import split_skeleton
from federated.model.losses import lm_loss_terms, loss_terms


@lru_cache(maxsize=64)
def step_flops(config: RunConfig, batch: int, length: int, rank: int) -> float:
    """FLOPs of one local step of ``batch`` examples of ``length`` tokens."""
    model = skeleton(config, rank)
    model.train()
    with FlopCounterMode(display=False) as counter:
        loss = loss_terms(model, meta_batch(config, batch, length), config.task).mean_loss()
        if config.mode == "lora":
            loss.backward()
    for param in model.parameters():
        param.grad = None
    flops = float(counter.get_total_flops())
    return 2 * flops if config.mode == "zo" else flops


@dataclass(frozen=True)
class SplitFlops:
    """What a split device computes, in FLOPs, at one batch: its local-loss step (head and
    tail, forward and backward), the forward of head and tail alone (a pruning pass), and the
    head's forward (sent, then recomputed for the backward)."""

    local_step: float
    local_forward: float
    head_forward: float

    @property
    def split_step(self) -> float:
        """One exchange step: the head forward and the tail's forward and backward, the head
        recomputed and back-propagated: a local step plus a head forward."""
        return self.local_step + self.head_forward


@lru_cache(maxsize=64)
def split_flops(config: RunConfig, batch: int, length: int) -> SplitFlops:
    """``config``'s split device at ``split.cut-layer``, ``batch`` examples of ``length``."""
    split = split_skeleton(config)
    ids = torch.zeros(batch, length, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as step:
        hidden, _ = split.head(ids, None)
        lm_loss_terms(split.tail(hidden), ids).mean_loss().backward()
    with torch.no_grad():
        with FlopCounterMode(display=False) as forward:
            hidden, _ = split.head(ids, None)
        with FlopCounterMode(display=False) as tail:
            split.tail(hidden)
    head = float(forward.get_total_flops())
    return SplitFlops(float(step.get_total_flops()), head + float(tail.get_total_flops()), head)
