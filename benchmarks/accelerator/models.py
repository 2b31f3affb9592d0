"""The models the accelerator benchmark trains: built from config files with random weights (no
weights travel to the GPU machine) on the device, held and computed as a ``Numerics`` says, with
FlowerTune LLM's LoRA adapter, fed random token ids.

A run loads a 4-bit model through transformers' ``BitsAndBytesConfig`` (NF4, double quantization,
compute in ``train.precision``), which quantizes only weights read from files: a random model
would go through a folder (``federated.model.presets``), 16 GB written and read for the 8B. Here
the same layers (the blocks' linear layers, ``quantized_linears``) are replaced by bitsandbytes'
``Linear4bit`` in that form, quantized where they are, and the model is marked as transformers'
quantizer marks it. From there on it is a run's path: ``prepared`` (peft's k-bit preparation,
gradient checkpointing) and the run's LoRA adapter (``wrapped``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from federated.config import RunConfig, parse_run_config
from federated.model.numerics import PLAIN_FP32, Numerics, quantized_linears
from federated.model.numerics_loading import bitsandbytes, prepared
from federated.model.presets import base_model_config
from federated.model.workspace import wrapped
from federated.tasks import TASK_CAUSAL_LM

CONFIGS = Path(__file__).resolve().parents[1] / "planner" / "configs"
# The planner's sizes, about 0.5, 1, 3 and 8 billion parameters.
SIZES = ("qwen2.5-0.5b", "llama-3.2-1b", "llama-3.2-3b", "llama-3-8b")
TINY, SMALL = "tiny-llama", "smollm2-135m"  # the tiny preset's shape and SmolLM2-135M's
# FlowerTune LLM's adapter (benchmarks/planner): rank 32, alpha 64, dropout 0.075, q and v.
RANK, ALPHA, DROPOUT, TARGETS = 32, 64.0, 0.075, "q_proj,v_proj"


def run_config(model: str, batch: int, length: int, numerics: Numerics = PLAIN_FP32) -> RunConfig:
    """The run config of a causal-LM job on ``model`` (a name in ``CONFIGS``) with FlowerTune's
    LoRA, as the planner's benchmark plans it, its base model held as ``numerics`` says."""
    return parse_run_config(
        {
            "model.name": str(CONFIGS / f"{model}.json"),
            "model.task": TASK_CAUSAL_LM,
            "model.max-length": length,
            "model.quantization": numerics.quantization,
            "lora.rank": RANK,
            "lora.alpha": ALPHA,
            "lora.dropout": DROPOUT,
            "lora.target-modules": TARGETS,
            "train.batch-size": batch,
            "train.precision": numerics.precision,
            "train.gradient-checkpointing": numerics.gradient_checkpointing,
        }
    )


def build(config: RunConfig, numerics: Numerics, device: torch.device) -> PeftModel:
    """``config``'s model with random weights on ``device``, held as ``numerics`` says, prepared
    and wrapped with its LoRA adapter as a run's model is."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        with torch.device(device):
            base = AutoModelForCausalLM.from_config(
                base_model_config(config.model.name, TASK_CAUSAL_LM), dtype=numerics.dtype
            )
    if numerics.quantization == "4bit":
        quantize_nf4_(base, numerics.dtype)
    elif numerics.quantized:
        raise ValueError(f"{numerics.quantization}: this benchmark measures 4-bit NF4 only")
    base = prepared(base, numerics, device.type)
    return wrapped(base, config.model, config.lora, config.lora.rank, config.task, config.seed)


def quantize_nf4_(model: torch.nn.Module, compute_dtype: torch.dtype) -> int:
    """Replace, in place, the base linear layers a k-bit model quantizes by NF4 layers with
    double quantization computing in ``compute_dtype``, each quantized where its weight is;
    returns how many."""
    bnb = bitsandbytes()  # beside the environment: only a k-bit measurement needs it

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
    # What transformers' 4-bit quantizer marks: peft then prepares the model as k-bit and wraps
    # these layers with its bitsandbytes LoRA layer.
    model.is_loaded_in_4bit = True
    return len(chosen)


def random_examples(
    count: int, length: int, vocab: int, generator: torch.Generator
) -> list[dict[str, list[int]]]:
    """``count`` encoded causal-LM examples of ``length`` random tokens, every token learned."""
    ids = torch.randint(0, vocab, (count, length), generator=generator).tolist()
    return [{"input_ids": row, "attention_mask": [1] * length, "labels": row} for row in ids]
