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

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from federated.config import RunConfig
from federated.devices.runtime_memory import runtime_bytes
from federated.model.losses import loss_terms
from federated.model.numerics import (
    PLAIN_FP32,
    Numerics,
    blocks,
    quantized_bytes,
    stand_in_for_kbit,
)
from federated.model.presets import skeleton_model
from federated.model.verbalizer import VerbalizedClassifier
from federated.model.workspace import num_labels, wrapped
from federated.tasks import TASK_CAUSAL_LM

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

    weights: float
    optimizer: float  # trainable gradients and AdamW moments; per-sample gradients under DP
    activations: float  # saved for the backward pass
    transient: float
    overhead: float = JOB_OVERHEAD_BYTES

    @property
    def runtime(self) -> float:
        """The client's runtime on this machine, which a CPU device holds beside the job. Asked
        for, not computed with the job: a GPU plan leaves it out, and measuring it imports the
        ClientApp, so a GPU machine without Flower can still plan (``benchmarks/accelerator``)."""
        return runtime_bytes()

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


def build_skeleton(
    config: RunConfig, rank: int, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The run's model with its LoRA adapter at ``rank`` on torch's meta device."""
    if config.verbalized:  # which rows score the classes changes no memory
        lm = skeleton_model(config.model.name, TASK_CAUSAL_LM, dtype=dtype)
        base = VerbalizedClassifier(lm, range(num_labels(config) or 1))
    else:
        base = skeleton_model(config.model.name, config.task, num_labels(config), dtype)
    if config.mode == "zo" and config.zo.params == "full":
        return base
    return wrapped(base, config.model, config.lora, rank, config.task, config.seed)


# Planning many devices builds the same skeleton again and again; it is never changed in place.
skeleton = lru_cache(maxsize=8)(build_skeleton)


def _bytes(tensors: list[torch.Tensor]) -> float:
    return float(sum(t.numel() * t.element_size() for t in tensors))


def meta_batch(config: RunConfig, batch: int, length: int) -> dict[str, torch.Tensor | None]:
    ids = torch.zeros(batch, length, dtype=torch.long, device="meta")
    labels = ids if config.task == TASK_CAUSAL_LM else ids[:, 0]
    # No mask: transformers reads a mask's values to pick its attention path, which meta tensors
    # do not have; the mask itself is batch x length² booleans at most.
    return {"input_ids": ids, "attention_mask": None, "labels": labels}


@dataclass
class _Saved:
    """What one training forward saves for the backward pass, by where it was saved."""

    outside: float = 0.0  # outside every transformer block
    per_block: list[float] = field(default_factory=list)
    block_inputs: float = 0.0  # what each block was given: all gradient checkpointing keeps
    largest: float = 0.0

    def kept(self, checkpointing: bool) -> float:
        """Bytes held at the backward pass's start (with checkpointing, the block inputs and
        one block's recomputed tensors at a time)."""
        if checkpointing and self.per_block:
            return self.outside + self.block_inputs + max(self.per_block)
        return self.outside + sum(self.per_block)


def _saved_for_backward(
    model: torch.nn.Module, config: RunConfig, batch: int, length: int
) -> _Saved:
    """The distinct storages autograd saves in one training forward, other than the model's
    own weights (a matmul saves its weight for the input's gradient; it is counted once, as a
    weight), by transformer block."""
    own = {t.untyped_storage()._cdata for t in [*model.parameters(), *model.buffers()]}
    # Each storage counted once; held until the end, so that no later one takes its address.
    seen: dict[int, torch.Tensor] = {}
    saved, current = _Saved(), [None]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in own and storage._cdata not in seen:
            seen[storage._cdata] = tensor
            size = float(storage.nbytes())
            saved.largest = max(saved.largest, size)
            if current[0] is None:
                saved.outside += size
            else:
                saved.per_block[current[0]] += size
        return tensor

    def enter(index: int):
        def hook(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            current[0] = index
            hidden = args[0] if args else kwargs.get("hidden_states")
            if isinstance(hidden, torch.Tensor):
                saved.block_inputs += hidden.numel() * hidden.element_size()

        return hook

    def leave(_module: torch.nn.Module, _args: tuple, _output: object) -> None:
        current[0] = None

    handles = []
    for index, block in enumerate(blocks(model)):
        saved.per_block.append(0.0)
        handles.append(block.register_forward_pre_hook(enter(index), with_kwargs=True))
        handles.append(block.register_forward_hook(leave))
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss_terms(model, meta_batch(config, batch, length), config.task).mean_loss()
    finally:
        for handle in handles:
            handle.remove()
    return saved


def _weight_bytes(
    model: torch.nn.Module, quantized: list[torch.nn.Linear], numerics: Numerics
) -> float:
    """The model's weights: quantized layers at their k-bit size, the rest as they are."""
    if not quantized:
        return _bytes(list(model.parameters())) + _bytes(list(model.buffers()))
    kept = {id(m.weight) for m in quantized}
    rest = [p for p in model.parameters() if id(p) not in kept]
    return (
        quantized_bytes(quantized, numerics.quantization)
        + _bytes(rest)
        + _bytes(list(model.buffers()))
    )


def estimate_memory(
    config: RunConfig, batch: int, length: int, rank: int, numerics: Numerics = PLAIN_FP32
) -> MemoryEstimate:
    """The peak memory of one client's round: ``config``'s model, mode and privacy, at this
    LoRA ``rank``, ``batch`` examples of ``length`` tokens a step, its base model held and
    computed as ``numerics`` says."""
    if numerics.quantized:  # the stand-in changes the model: a fresh one, not the cached
        model = build_skeleton(config, rank, numerics.dtype)
        quantized = stand_in_for_kbit(model, numerics)
    else:
        model, quantized = skeleton(config, rank, numerics.dtype), []
    params = list(model.parameters())
    weights = _weight_bytes(model, quantized, numerics)
    trainable = _bytes([p for p in params if p.requires_grad])
    # A quantized layer's weight is dequantized for each matmul, forward and backward.
    dequantized = max((m.weight.numel() * m.weight.element_size() for m in quantized), default=0)
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
        transient = ZO_TRANSIENT_FACTOR * largest_output + perturbed + dequantized
        return MemoryEstimate(weights, 0.0, 0.0, transient)
    saved = _saved_for_backward(model, config, batch, length)
    activations = saved.kept(numerics.gradient_checkpointing)
    optimizer = 3 * trainable  # a gradient and AdamW's two moments per trainable weight
    if config.dp.record_level and config.dp.record.grad_sample_mode != "ghost":
        optimizer += batch * trainable
    transient = TRANSIENT_FACTOR * saved.largest + dequantized
    return MemoryEstimate(weights, optimizer, activations, transient)


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
