"""How a training job holds and computes its base model, for planning its memory: the precision
of the base weights, their k-bit quantization (bitsandbytes, prepared as peft prepares k-bit
models) and whether activations are recomputed (gradient checkpointing).

The memory estimate runs a job's forward on torch's meta device. A quantized linear layer has
no meta form, so it is stood in for by a linear layer in the compute dtype that does what
bitsandbytes' ``Linear4bit``/``Linear8bitLt`` do around their matmul (input cast to the compute
dtype, output cast back), and its weight is counted at the quantized size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from federated.numeric_names import PRECISIONS, QUANTIZATIONS

DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.bfloat16, torch.float16), strict=True))
# Bits a quantized weight takes with its constants. NF4 with double quantization: 4 bits, an
# 8-bit absmax per block of 64 and a float32 constant per 256 absmax (QLoRA, Dettmers et al.
# 2023, section 3); LLM.int8: 8 bits (its float32 scale per output row is counted apart).
WEIGHT_BITS = {"4bit": 4 + 8 / 64 + 32 / (64 * 256), "8bit": 8.0}


@dataclass(frozen=True)
class Numerics:
    """``precision``: the base weights' dtype (the compute dtype of quantized layers);
    ``quantization``: none, 8bit or 4bit base linear layers; ``gradient_checkpointing``: each
    transformer block keeps only its input, and recomputes the rest in the backward pass."""

    precision: str = "fp32"
    quantization: str = "none"
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: one of {', '.join(PRECISIONS)}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"quantization {self.quantization!r}: one of {', '.join(QUANTIZATIONS)}"
            )

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    @property
    def quantized(self) -> bool:
        return self.quantization != "none"

    def describe(self) -> str:
        parts = [self.precision]
        if self.quantized:
            parts.append("4-bit NF4" if self.quantization == "4bit" else "8-bit LLM.int8")
        if self.gradient_checkpointing:
            parts.append("gradient checkpointing")
        return ", ".join(parts)


# What every job planned so far trains with: float32 weights, none quantized, nothing recomputed.
PLAIN_FP32 = Numerics()


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer blocks: what gradient checkpointing recomputes, and whose linear
    layers bitsandbytes quantizes (the output head and embeddings stay as they are)."""
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def quantized_linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """The base linear layers a k-bit model quantizes: every one inside a block (a LoRA layer's
    own factors are not base layers)."""
    found = []
    for block in blocks(model):
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear) and "lora_" not in name:
                found.append(module)
    return found


def stand_in_for_kbit(model: torch.nn.Module, numerics: Numerics) -> list[torch.nn.Linear]:
    """Make the meta ``model`` compute as its k-bit form would: the base weights outside the
    quantized layers in float32 (peft's ``prepare_model_for_kbit_training``), each quantized
    layer casting its input to the compute dtype and its output back; the quantized layers."""
    linears = quantized_linears(model)
    kept = {id(m.weight) for m in linears}
    for param in model.parameters():
        if id(param) not in kept and param.dtype in (torch.float16, torch.bfloat16):
            param.data = param.data.to(torch.float32)
    for linear in linears:
        linear.register_forward_pre_hook(_to_compute_dtype(numerics.dtype), with_kwargs=True)
        linear.register_forward_hook(_back_to_input_dtype, with_kwargs=True)
    return linears


def _to_compute_dtype(dtype: torch.dtype):
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict):
        module._input_dtype = args[0].dtype
        return (args[0].to(dtype), *args[1:]), kwargs

    return hook


def _back_to_input_dtype(
    module: torch.nn.Module, args: tuple, kwargs: dict, output: torch.Tensor
) -> torch.Tensor:
    return output.to(module._input_dtype)


def quantized_bytes(linears: list[torch.nn.Linear], quantization: str) -> float:
    """What ``linears``' weights take quantized, their constants included."""
    bits = WEIGHT_BITS[quantization]
    total = 0.0
    for linear in linears:
        total += linear.weight.numel() * bits / 8
        if quantization == "8bit":
            total += linear.out_features * 4  # a float32 scale per row
    return total
