"""How much memory a client's training job needs, from the model's own config, without running it.

The model is built on torch's meta device (shapes, no storage) with the run's LoRA adapter, and
one training step's forward runs on a meta batch through fedtune's own loss: every tensor that
autograd saves for the backward pass is seen, with its real shape and dtype, so attention,
dropout masks, the vocabulary's logits and whatever a new architecture does are all counted
as they are, not from a formula. What the step adds beyond the saved tensors (gradients flowing
back, the loss's temporaries) is a multiple of the largest saved tensor (measured,
``benchmarks/simulation``); the runtime (Python, torch, Flower and the ClientApp imported) is
measured on this machine (``federated.devices.runtime_memory``). The estimate holds for an
allocator that gives freed blocks back (``federated.devices.allocator``), which a node that plans
its memory sets (``client.planned_memory``).

LoRA: weights + trainable gradients and AdamW's two moments + saved activations + the step's
transients; under record-level DP, opacus's per-sample gradients (batch x trainable weights,
except in ghost mode). Zeroth-order: weights + the forward's transients, no saved activations
(no autograd), plus one perturbation of the largest perturbed tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from federated.config import RunConfig
from federated.devices.runtime_memory import runtime_bytes
from federated.model.losses import loss_terms
from federated.model.presets import skeleton_model
from federated.model.tasks import TASK_CAUSAL_LM
from federated.model.verbalizer import VerbalizedClassifier
from federated.model.workspace import num_labels, wrapped

# Beyond the tensors saved for backward, a step holds gradients on their way back and the
# loss's temporaries: about this many times the largest saved tensor (measured, same place).
TRANSIENT_FACTOR = 2.0
# A zeroth-order step holds the largest output (the logits), its shifted copy and its log-softmax.
ZO_TRANSIENT_FACTOR = 3.0
# What a job holds beyond its tensors (allocator arenas, autograd's buffers, the tokenizer):
# the measured job memory of the tiny models less their estimated tensors, about the same for each.
JOB_OVERHEAD_BYTES = 60e6
# The estimate's largest shortfall against a measured peak was 4% of the job (MiniLM under
# record-level DP: 15 MB; benchmarks/simulation). Twice that is kept in hand, so that a job the
# planner promises a device still fits where the estimate errs as much on a model not measured.
HEADROOM_FRACTION = 0.08


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of each part of a training job's peak."""

    runtime: float
    weights: float
    optimizer: float  # trainable gradients and AdamW moments; per-sample gradients under DP
    activations: float  # saved for the backward pass
    transient: float
    overhead: float = JOB_OVERHEAD_BYTES

    @property
    def counted(self) -> float:
        """The job's parts as estimated, before the headroom."""
        return self.weights + self.optimizer + self.activations + self.transient + self.overhead

    @property
    def headroom(self) -> float:
        return HEADROOM_FRACTION * self.counted

    @property
    def job(self) -> float:
        """What the job adds to the runtime."""
        return self.counted + self.headroom

    @property
    def total(self) -> float:
        return self.runtime + self.job


@lru_cache(maxsize=8)
def skeleton(config: RunConfig, rank: int) -> torch.nn.Module:
    if config.verbalized:  # which rows score the classes changes no memory
        lm = skeleton_model(config.model.name, TASK_CAUSAL_LM)
        base = VerbalizedClassifier(lm, range(num_labels(config) or 1))
    else:
        base = skeleton_model(config.model.name, config.task, num_labels(config))
    if config.mode == "zo" and config.zo.params == "full":
        return base
    return wrapped(base, config.model, config.lora, rank, config.task, config.seed)


def _bytes(tensors: list[torch.Tensor]) -> float:
    return float(sum(t.numel() * t.element_size() for t in tensors))


def meta_batch(config: RunConfig, batch: int, length: int) -> dict[str, torch.Tensor | None]:
    ids = torch.zeros(batch, length, dtype=torch.long, device="meta")
    labels = ids if config.task == TASK_CAUSAL_LM else ids[:, 0]
    # No mask: transformers reads a mask's values to pick its attention path, which meta tensors
    # do not have; the mask itself is batch x length² booleans at most.
    return {"input_ids": ids, "attention_mask": None, "labels": labels}


def _saved_for_backward(model: torch.nn.Module, config: RunConfig, batch: int, length: int):
    """The distinct storages autograd saves in one training forward, other than the model's
    own weights (a matmul saves its weight for the input's gradient; it is counted once, as a
    weight)."""
    own = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    saved: dict[int, torch.Tensor] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in own:
            saved.setdefault(storage._cdata, tensor)
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_terms(model, meta_batch(config, batch, length), config.task).mean_loss()
    return [t.untyped_storage() for t in saved.values()]


def estimate_memory(config: RunConfig, batch: int, length: int, rank: int) -> MemoryEstimate:
    """The peak memory of one client's round: ``config``'s model, mode and privacy, at this
    LoRA ``rank``, ``batch`` examples of ``length`` tokens a step."""
    model = skeleton(config, rank)
    params = list(model.parameters())
    weights = _bytes(params) + _bytes(list(model.buffers()))
    trainable = _bytes([p for p in params if p.requires_grad])
    if config.mode == "zo":
        largest_output = _largest_output(model, config, batch, length)
        perturbed = max(
            (
                t.numel() * t.element_size()
                for t in params
                if config.zo.params == "full" or t.requires_grad
            ),
            default=0,
        )
        transient = ZO_TRANSIENT_FACTOR * largest_output + perturbed
        return MemoryEstimate(runtime_bytes(), weights, 0.0, 0.0, transient)
    storages = _saved_for_backward(model, config, batch, length)
    activations = float(sum(s.nbytes() for s in storages))
    largest = max((s.nbytes() for s in storages), default=0)
    optimizer = 3 * trainable  # a gradient and AdamW's two moments per trainable weight
    if config.dp.record_level and config.dp.record.grad_sample_mode != "ghost":
        optimizer += batch * trainable
    return MemoryEstimate(
        runtime_bytes(), weights, optimizer, activations, TRANSIENT_FACTOR * largest
    )


def _largest_output(model: torch.nn.Module, config: RunConfig, batch: int, length: int) -> float:
    """The largest tensor a no-grad forward makes (the logits, for a language model)."""
    largest = 0.0

    def watch(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        nonlocal largest
        tensor = getattr(output, "logits", output)
        if isinstance(tensor, tuple):
            tensor = tensor[0]
        if isinstance(tensor, torch.Tensor):
            largest = max(largest, tensor.numel() * tensor.element_size())

    handles = [m.register_forward_hook(watch) for m in model.modules()]
    try:
        with torch.no_grad():
            loss_terms(model, meta_batch(config, batch, length), config.task)
    finally:
        for handle in handles:
            handle.remove()
    return largest
