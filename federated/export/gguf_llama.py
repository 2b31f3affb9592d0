"""The llama family in GGUF: hyperparameters and tensors as llama.cpp's ``llama`` and ``qwen2``
architectures read them.

transformers' Llama rotates the two halves of each attention head (``rotate_half``); llama.cpp's
``llama`` architecture rotates adjacent pairs. The same rotation on permuted rows gives the same
attention, so the query and key matrices are written with each head's rows reordered from
(half, i) to (i, half), as llama.cpp's converter does and transformers' GGUF loader undoes.
Mistral is the same network (its sliding window aside, which llama.cpp's converter also drops:
it matters only past 4096 tokens of context). llama.cpp's ``qwen2`` rotates halves as
transformers does, so Qwen2's rows go unchanged, with its query, key and value biases.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from gguf import MODEL_ARCH, MODEL_ARCH_NAMES, GGUFWriter, TensorNameMap
from transformers import PretrainedConfig, PreTrainedModel

# transformers' model_type -> (llama.cpp's architecture, whether q and k rows are permuted)
_ARCHITECTURES = {
    "llama": (MODEL_ARCH.LLAMA, True),
    "mistral": (MODEL_ARCH.LLAMA, True),
    "qwen2": (MODEL_ARCH.QWEN2, False),
}
ARCHITECTURES = tuple(_ARCHITECTURES)


def check_llama_family(config: PretrainedConfig) -> None:
    """A ``ValueError`` in one line unless ``config`` is a model this converter writes exactly."""
    kind = config.model_type
    if kind not in _ARCHITECTURES:
        raise ValueError(
            f"GGUF export supports the llama family ({', '.join(ARCHITECTURES)} causal LMs); "
            f"this model is {kind!r}"
        )
    unsupported = [
        what
        for what, present in (
            (f"rope type {_rope(config).get('rope_type')!r}", _rope_type(config) != "default"),
            ("attention biases", getattr(config, "attention_bias", False)),
            ("MLP biases", getattr(config, "mlp_bias", False)),
            (f"activation {config.hidden_act!r}", config.hidden_act != "silu"),
        )
        if present
    ]
    if unsupported:
        raise ValueError(f"GGUF export of {kind} supports none of: {', '.join(unsupported)}")


def arch_name(config: PretrainedConfig) -> str:
    """llama.cpp's name of the architecture ``config`` is written as."""
    return MODEL_ARCH_NAMES[_ARCHITECTURES[config.model_type][0]]


def add_llama_parameters(writer: GGUFWriter, config: PretrainedConfig) -> None:
    """The ``<arch>.*`` hyperparameters llama.cpp builds the network from."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads or heads)
    writer.add_rope_freq_base(float(_rope(config).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def llama_tensors(model: PreTrainedModel) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor by its GGUF name, float32, query and key rows permuted where the
    architecture wants it; a tied output matrix is left out (llama.cpp then reads the token
    embedding for it)."""
    config = model.config
    arch, permuted = _ARCHITECTURES[config.model_type]
    names = TensorNameMap(arch, config.num_hidden_layers)
    heads = config.num_attention_heads
    kv_heads = config.num_key_value_heads or heads
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and config.tie_word_embeddings:
            continue
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"GGUF export: no llama.cpp tensor for {key!r}")
        data = tensor.detach().to(torch.float32)
        if permuted and key.endswith("q_proj.weight"):
            data = _pairs_adjacent(data, heads)
        elif permuted and key.endswith("k_proj.weight"):
            data = _pairs_adjacent(data, kv_heads)
        yield name, data.numpy()


def _pairs_adjacent(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Each head's rows (half, i) reordered to (i, half)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _rope(config: PretrainedConfig) -> dict:
    return getattr(config, "rope_parameters", None) or {}


def _rope_type(config: PretrainedConfig) -> str:
    return _rope(config).get("rope_type", "default")
