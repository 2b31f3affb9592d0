"""peft's model around a base, its random initialisation drawn from a seed alone."""

from __future__ import annotations

import warnings

import torch
from peft import PeftConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel


def seeded_peft_model(model: PreTrainedModel, config: PeftConfig, seed: int) -> PeftModel:
    """``get_peft_model(model, config)`` with peft's draws (lora_A, a sampled prompt) from
    ``seed``: torch's global generator is forked, so the adapter does not depend on what ran
    before, and nothing after it depends on the adapter."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # peft 0.21 calls a transformers 5 method that is deprecated; nothing for users to act on.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        torch.manual_seed(seed)
        return get_peft_model(model, config)
