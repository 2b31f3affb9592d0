"""The GGUF types ``fedtune export --gguf`` writes, and the type each tensor is stored in.

Norms and other vectors stay float32 in every type (llama.cpp's own converter does the same:
they are a sliver of the file and quantizing them costs accuracy for nothing). In q4_0 the token
embedding (the output matrix too, when it is tied to it, as in SmolLM2) is stored in q8_0: every
token's logit goes through it, and llama.cpp's quantizer keeps the output matrix at 6 bits in its
own 4-bit mixes (Q6_K, which the ``gguf`` package cannot write), as the SmolLM2 GGUF this project
ships keeps its token embedding in q8_0 beside Q4_1 blocks.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType, LlamaFileType, QuantError
from gguf.quants import quantize

# --gguf TYPE -> (the type of the blocks' matrices, the file type llama.cpp reports)
GGUF_TYPES = {
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (GGMLQuantizationType.Q4_0, LlamaFileType.MOSTLY_Q4_0),
}
_EMBEDDING_TYPE = {GGMLQuantizationType.Q4_0: GGMLQuantizationType.Q8_0}
EMBEDDING_TENSORS = ("token_embd.weight", "output.weight")


def tensor_type(name: str, shape: tuple[int, ...], gguf_type: str) -> GGMLQuantizationType:
    """The type tensor ``name`` of ``shape`` is stored in for the file type ``gguf_type``."""
    if len(shape) < 2:
        return GGMLQuantizationType.F32
    matrices = GGUF_TYPES[gguf_type][0]
    return _EMBEDDING_TYPE.get(matrices, matrices) if name in EMBEDDING_TENSORS else matrices


def encoded(
    data: np.ndarray, qtype: GGMLQuantizationType
) -> tuple[np.ndarray, GGMLQuantizationType]:
    """``data`` (float32) in ``qtype``; a matrix whose rows do not split into the type's blocks of
    32 falls back to f16, as llama.cpp's converter does."""
    if qtype == GGMLQuantizationType.F32:
        return data.astype(np.float32), qtype
    try:
        return quantize(data, qtype), qtype
    except QuantError:
        return data.astype(np.float16), GGMLQuantizationType.F16
