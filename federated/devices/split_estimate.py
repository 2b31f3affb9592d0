"""How much memory a split device needs: what it holds (the embeddings, the prompt or its
blocks' LoRA factors, the blocks before the cut, the final norm and the LM head) and what its
largest step saves for the backward pass, the local-loss forward (head, then tail over every
position, the vocabulary's logits included; the pruning pass runs at the same batch with no
backward, and holds less), counted on torch's meta device as ``memory_estimate`` counts a whole
model's step. The server's blocks are not the device's."""

from __future__ import annotations

import torch

from federated.config import RunConfig
from federated.devices.memory_estimate import TRANSIENT_FACTOR, MemoryEstimate, skeleton
from federated.model.losses import lm_loss_terms
from federated.model.numerics import Numerics
from federated.model.presets import skeleton_model
from federated.split.parts import SplitModel
from federated.split.prompt_model import with_soft_prompt
from federated.tasks import TASK_CAUSAL_LM


def split_skeleton(config: RunConfig, dtype: torch.dtype = torch.float32) -> SplitModel:
    """The run's model cut at ``split.cut-layer`` on the meta device: behind its prompt in
    mode = split, with its LoRA adapter in a LoRA run."""
    if config.mode != "split":
        return SplitModel(skeleton(config, config.lora.rank, dtype), config.split.cut_layer)
    base = skeleton_model(config.model.name, TASK_CAUSAL_LM, dtype=dtype)
    base.requires_grad_(False)
    with torch.device("meta"):
        prompted = with_soft_prompt(base, config.split.prompt_length, config.seed)
    return SplitModel(prompted, config.split.cut_layer)


def estimate_split_memory(
    config: RunConfig, batch: int, length: int, numerics: Numerics
) -> MemoryEstimate:
    """The peak of a split device's round at ``batch`` sequences of ``length`` tokens."""
    split = split_skeleton(config, numerics.dtype)
    held = split.device_parameters()
    weights = float(sum(p.numel() * p.element_size() for p in held))
    trained = sum(p.numel() * p.element_size() for p in split.device_trainable().values())
    own = {p.untyped_storage()._cdata for p in held}
    seen: dict[int, torch.Tensor] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in own:
            seen.setdefault(storage._cdata, tensor)
        return tensor

    ids = torch.zeros(batch, length, dtype=torch.long, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden, _ = split.head(ids, None)
        lm_loss_terms(split.tail(hidden), ids).mean_loss()
    sizes = [float(t.untyped_storage().nbytes()) for t in seen.values()]
    # The trained tensors' gradients and AdamW's two moments.
    return MemoryEstimate(weights, 3.0 * trained, sum(sizes), TRANSIENT_FACTOR * max(sizes))
