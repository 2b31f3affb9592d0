"""The models the accelerator benchmark trains: built from config files with random weights (no
weights travel to the GPU machine), held and computed as a ``Numerics`` says, with FlowerTune
LLM's LoRA adapter, fed random token ids.

The base linear layers of a 4-bit model are replaced by bitsandbytes' NF4 layers (double
quantization, bf16 compute), the set and the storage that transformers'
``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)``
loads, then prepared by peft's ``prepare_model_for_kbit_training``: what the planner's estimate
models (``federated.devices.numerics``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from peft import PeftModel, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM

from federated.config import RunConfig, parse_run_config
from federated.devices.numerics import Numerics, quantized_linears
from federated.model.presets import base_model_config
from federated.model.tasks import TASK_CAUSAL_LM
from federated.model.workspace import wrapped

CONFIGS = Path(__file__).resolve().parents[1] / "planner" / "configs"
# The planner's sizes, about 0.5, 1, 3 and 8 billion parameters.
SIZES = ("qwen2.5-0.5b", "llama-3.2-1b", "llama-3.2-3b", "llama-3-8b")
TINY, SMALL = "tiny-llama", "smollm2-135m"  # the tiny preset's shape and SmolLM2-135M's
# FlowerTune LLM's adapter (benchmarks/planner): rank 32, alpha 64, dropout 0.075, q and v.
RANK, ALPHA, DROPOUT, TARGETS = 32, 64.0, 0.075, "q_proj,v_proj"


def run_config(model: str, batch: int, length: int) -> RunConfig:
    """The run config of a causal-LM job on ``model`` (a name in ``CONFIGS``) with FlowerTune's
    LoRA, as the planner's benchmark plans it."""
    return parse_run_config(
        {
            "model.name": str(CONFIGS / f"{model}.json"),
            "model.task": TASK_CAUSAL_LM,
            "model.max-length": length,
            "lora.rank": RANK,
            "lora.alpha": ALPHA,
            "lora.dropout": DROPOUT,
            "lora.target-modules": TARGETS,
            "train.batch-size": batch,
        }
    )


def build(config: RunConfig, numerics: Numerics, device: torch.device) -> PeftModel:
    """``config``'s model with random weights on ``device``, held as ``numerics`` says, with its
    LoRA adapter; gradient checkpointing as ``numerics`` says (``set_checkpointing``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        with torch.device(device):
            base = AutoModelForCausalLM.from_config(
                base_model_config(config.model.name, TASK_CAUSAL_LM), dtype=numerics.dtype
            )
    if numerics.quantization == "4bit":
        quantize_nf4_(base, numerics.dtype)
        prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    elif numerics.quantized:
        raise ValueError(f"{numerics.quantization}: this benchmark measures 4-bit NF4 only")
    model = wrapped(base, config.model, config.lora, config.lora.rank, config.task, config.seed)
    set_checkpointing(model, numerics.gradient_checkpointing)
    return model


def set_checkpointing(model: PeftModel, on: bool) -> None:
    """Recompute each block in the backward pass, or keep its activations. Non-reentrant: the
    frozen embeddings' output needs no gradient for the adapters inside the blocks to get one."""
    # Every transformers 5 has this name (the GPU machine's is 5.17); 5.23 deprecates it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing_.* is deprecated")
        if on:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        else:
            model.gradient_checkpointing_disable()


def quantize_nf4_(model: torch.nn.Module, compute_dtype: torch.dtype) -> int:
    """Replace, in place, the base linear layers a k-bit model quantizes by NF4 layers with
    double quantization computing in ``compute_dtype``, each quantized where its weight is;
    returns how many."""
    import bitsandbytes as bnb  # not a dependency: only a k-bit measurement needs it

    chosen = {id(m) for m in quantized_linears(model)}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) not in chosen:
                continue
            layer = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=compute_dtype,
                compress_statistics=True,
                quant_type="nf4",
                device="meta",
            )
            layer.weight = bnb.nn.Params4bit(
                child.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4"
            )
            if child.bias is not None:
                layer.bias = child.bias
            setattr(parent, name, layer.to(child.weight.device))  # the move quantizes
    # What transformers' 4-bit quantizer marks: peft then wraps these layers with its bnb LoRA.
    model.is_loaded_in_4bit = True
    return len(chosen)


def random_examples(
    count: int, length: int, vocab: int, generator: torch.Generator
) -> list[dict[str, list[int]]]:
    """``count`` encoded causal-LM examples of ``length`` random tokens, every token learned."""
    ids = torch.randint(0, vocab, (count, length), generator=generator).tolist()
    return [{"input_ids": row, "attention_mask": [1] * length, "labels": row} for row in ids]
