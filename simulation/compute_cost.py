"""The FLOPs of one local step, counted on the run's own model on torch's meta device.

torch's ``FlopCounterMode`` counts every matmul and attention of a forward (and, for LoRA, of
the backward, which through frozen weights computes input gradients only: about one more
forward) from shapes alone. A zeroth-order step is two forwards.
"""

from __future__ import annotations

from functools import lru_cache

from torch.utils.flop_counter import FlopCounterMode

from federated.config import RunConfig
from federated.devices.memory_estimate import meta_batch, skeleton
from federated.model.losses import loss_terms


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
