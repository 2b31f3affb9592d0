"""A tiny random GPT-2 saved as a bring-your-own model folder: its attention and MLP layers are
``Conv1D``, which store their weight as (in, out), and ``c_attn`` is not square."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from federated.model.presets import load_tokenizer


def tiny_gpt2_config(
    tokenizer: PreTrainedTokenizerBase, **special_tokens: int | None
) -> GPT2Config:
    """A 2-layer GPT-2 of width 32 for ``tokenizer``'s vocabulary."""
    return GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128, **special_tokens
    )


def save_tiny_gpt2(folder: Path) -> Path:
    tokenizer = load_tokenizer("tiny-llama")  # any tokenizer that is on the machine will do
    config = tiny_gpt2_config(tokenizer, pad_token_id=tokenizer.pad_token_id)
    # A fixed draw: an unseeded one made the end-to-end runs differ from one launch to the next.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
