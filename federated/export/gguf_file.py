"""One GGUF file of a merged causal LM of the llama family (Llama, Mistral, Qwen2), with its
tokenizer embedded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_VERSION, GGUFWriter
from transformers import PreTrainedModel

from federated.export.gguf_llama import (
    add_llama_parameters,
    arch_name,
    check_llama_family,
    llama_tensors,
)
from federated.export.gguf_types import GGUF_TYPES, encoded, tensor_type
from federated.export.gguf_vocab import add_bpe_vocab


def write_gguf(
    model: PreTrainedModel,
    tokenizer: Any,
    tokenizer_folder: Path,
    path: Path,
    gguf_type: str,
    name: str,
) -> str:
    """Write ``model`` in ``gguf_type`` (see `GGUF_TYPES`) to ``path``, with ``tokenizer`` (as
    saved in ``tokenizer_folder``); returns the name of the pre-tokenizer written."""
    if gguf_type not in GGUF_TYPES:
        raise ValueError(f"GGUF type {gguf_type!r} is not one of {', '.join(GGUF_TYPES)}")
    check_llama_family(model.config)
    partial = path.with_name(f".{path.name}.partial")
    writer = GGUFWriter(partial, arch_name(model.config))
    try:
        writer.add_name(name)
        writer.add_file_type(GGUF_TYPES[gguf_type][1])
        writer.add_quantization_version(GGML_QUANT_VERSION)
        add_llama_parameters(writer, model.config)
        pre = add_bpe_vocab(writer, tokenizer, tokenizer_folder, model.config.vocab_size)
        for tensor_name, data in llama_tensors(model):
            stored, qtype = encoded(data, tensor_type(tensor_name, data.shape, gguf_type))
            writer.add_tensor(tensor_name, stored, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(partial, path)
    return pre
