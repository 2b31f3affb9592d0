"""Tiny wrapped models and inputs shared by tests: plain functions any test module can import."""

from __future__ import annotations

import torch
from peft import PeftModel

from federated.model.lora import wrap_with_lora
from federated.model.presets import load_base_model
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION

TINY_NUM_LABELS = 3


def tiny_lora_model(
    task: str,
    *,
    base_seed: int = 0,
    lora_seed: int = 0,
    rank: int = 4,
    target_modules: tuple[str, ...] | None = None,
    dropout: float = 0.0,
) -> PeftModel:
    """Return tiny-llama (causal LM) or tiny-bert (classification) wrapped with LoRA on q and v."""
    if task == TASK_CAUSAL_LM:
        base = load_base_model("tiny-llama", task, seed=base_seed)
        targets = target_modules or ("q_proj", "v_proj")
    else:
        base = load_base_model("tiny-bert", task, num_labels=TINY_NUM_LABELS, seed=base_seed)
        targets = target_modules or ("query", "value")
    return wrap_with_lora(
        base,
        task,
        rank=rank,
        alpha=2.0 * rank,
        dropout=dropout,
        target_modules=targets,
        seed=lora_seed,
    )


def tiny_inputs(task: str, *, batch: int = 2, length: int = 12, seed: int = 0) -> dict:
    """Return a batch of random token ids (with one padded row) for the tiny presets."""
    vocab = 49152 if task == TASK_CAUSAL_LM else 30522
    generator = torch.Generator().manual_seed(seed)
    # Ids from 10 up steer clear of the special tokens at the start of both vocabularies.
    input_ids = torch.randint(10, vocab, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, length // 2 :] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def perturb_trainable(model: PeftModel, seed: int = 1) -> None:
    """Give every trainable tensor random values, so LoRA B is no longer zero and outputs move."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))


__all__ = [
    "TASK_CAUSAL_LM",
    "TASK_CLASSIFICATION",
    "TINY_NUM_LABELS",
    "perturb_trainable",
    "tiny_inputs",
    "tiny_lora_model",
]
