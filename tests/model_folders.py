"""Model folders for tests: small Llama decoders of a chosen shape, saved as transformers saves
a pretrained model, with the tiny-llama tokenizer."""

from __future__ import annotations

from pathlib import Path

from transformers import LlamaConfig, LlamaForCausalLM

from federated.model.presets import load_tokenizer


def llama_folder(folder: Path, *, blocks: int, hidden: int, intermediate: int) -> Path:
    """A randomly initialised Llama of ``blocks`` blocks, with tied embeddings, in ``folder``."""
    tokenizer = load_tokenizer("tiny-llama")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=blocks,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
