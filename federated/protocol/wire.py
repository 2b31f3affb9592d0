"""Tensors to and from Flower records, and the exact size of a message on the wire."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

# ArrayRecord refuses bf16, and aggregation wants full precision anyway.
WIRE_DTYPE = torch.float32


def tensors_to_record(tensors: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """Pack named tensors into an ArrayRecord as contiguous CPU arrays, in key order.

    Floating tensors travel as fp32; integer tensors (seed indices) keep their dtype.
    """
    packed = {}
    for key in sorted(tensors):
        tensor = tensors[key].detach().to("cpu")
        if tensor.is_floating_point():
            tensor = tensor.to(WIRE_DTYPE)
        packed[key] = tensor.contiguous()
    return ArrayRecord(packed)


def record_to_tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Unpack an ArrayRecord into named torch tensors."""
    return dict(record.to_torch_state_dict())


def serialized_bytes(payload: Message | RecordDict) -> int:
    """Bytes of a message as Flower ships it: the sum of its deflated objects.

    Flower sends a message as a tree of content-addressed objects (message, record dict, records,
    arrays, array chunks), each serialized on its own; their sizes add up to what crosses the wire,
    before gRPC framing.
    """
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(payload).values())
