"""Tensors to and from Flower records, and the exact size of a message on the wire.

Floating tensors travel in the run's wire dtype (``wire.dtype``: float32, bfloat16 or float16)
and decode to float32 on receipt, so what aggregates, screens and trains is float32 everywhere.
Rounding to a 16-bit type is round-to-nearest-even, the same on every device: the server knows
to the bit what a client decoded from its broadcast (``as_received``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

WIRE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
# numpy has no bfloat16: such an array is numpy's uint16 array of its bit patterns, and the
# Array's own dtype field says bfloat16.
_BITS_OF = {"bfloat16": np.uint16}
# How far rounding to the dtype moves a value, relative to it (half an ulp; float32 tensors
# travel as they are).
_UNIT_ROUNDOFF = {"float32": 0.0, "bfloat16": 2.0**-8, "float16": 2.0**-11}
# float16's subnormal spacing: below 2^-14 its rounding error is absolute, at most half of it.
_ABSOLUTE_ROUNDOFF = {"float32": 0.0, "bfloat16": 0.0, "float16": 2.0**-25}


def tensors_to_record(tensors: Mapping[str, torch.Tensor], dtype: str = "float32") -> ArrayRecord:
    """Pack named tensors into an ArrayRecord as contiguous CPU arrays, in key order.

    Floating tensors travel as ``dtype`` (a ``WIRE_DTYPES`` name); integer tensors (seed
    indices) keep theirs.
    """
    return ArrayRecord({key: _array(tensors[key], dtype) for key in sorted(tensors)})


def _array(tensor: torch.Tensor, dtype: str) -> Array:
    tensor = tensor.detach().to("cpu")
    if not tensor.is_floating_point():
        return Array(tensor.contiguous().numpy())
    tensor = tensor.to(WIRE_DTYPES[dtype]).contiguous()
    if dtype not in _BITS_OF:
        return Array(tensor.numpy())
    bits = Array(tensor.view(torch.int16).numpy().view(_BITS_OF[dtype]))
    return Array(dtype=dtype, shape=bits.shape, stype=bits.stype, data=bits.data)


def record_to_tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Unpack an ArrayRecord into named torch tensors, floating ones as float32.

    Raises
    ------
    ValueError
        A bfloat16 array whose numpy payload is not its uint16 bit patterns in its shape.
    """
    return {key: _tensor(key, array) for key, array in record.items()}


def _tensor(key: str, array: Array) -> torch.Tensor:
    values = array.numpy()
    if array.dtype in _BITS_OF:
        bits = _BITS_OF[array.dtype]
        if values.dtype != bits or values.shape != tuple(array.shape):
            raise ValueError(
                f"'{key}' says {array.dtype} {tuple(array.shape)} but holds {values.dtype} "
                f"{values.shape}"
            )
        patterns = torch.from_numpy(values.view(np.int16).copy())
        return patterns.view(WIRE_DTYPES[array.dtype]).float()
    tensor = torch.from_numpy(values)
    return tensor.float() if tensor.is_floating_point() else tensor


def as_received(tensors: Mapping[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """What a receiver decodes from ``tensors`` sent in ``dtype``: each floating tensor rounded
    to it and back to float32, bit for bit."""
    return {
        k: v.to(WIRE_DTYPES[dtype]).float() if v.is_floating_point() else v
        for k, v in tensors.items()
    }


def rounding_room(dtype: str, magnitude: float, count: int = 1) -> float:
    """The most that rounding ``count`` values to ``dtype`` can move them (one value: its
    distance, several: their L2 norm), when they or their rounding measure ``magnitude`` (one
    value's size, or the L2 norm). Twice the unit roundoff covers either side's magnitude;
    float32 rounds nothing."""
    return 2 * _UNIT_ROUNDOFF[dtype] * magnitude + _ABSOLUTE_ROUNDOFF[dtype] * count**0.5


def serialized_bytes(payload: Message | RecordDict) -> int:
    """Bytes of a message as Flower ships it: the sum of its deflated objects.

    Flower sends a message as a tree of content-addressed objects (message, record dict, records,
    arrays, array chunks), each serialized on its own; their sizes add up to what crosses the wire,
    before gRPC framing.
    """
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(payload).values())
