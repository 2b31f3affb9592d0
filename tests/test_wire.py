"""Tensors through Flower records, and byte counts that are the serialized size."""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from federated.protocol.wire import record_to_tensors, serialized_bytes, tensors_to_record


def _state(scale: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "layer.lora_A.weight": torch.randn(8, 64 * scale, generator=g),
        "layer.lora_B.weight": torch.randn(64, 8, generator=g),
        "head.bias": torch.randn(3, generator=g, dtype=torch.float64),
    }


def test_round_trip_keeps_names_values_and_makes_fp32() -> None:
    state = _state()
    back = record_to_tensors(tensors_to_record(state))
    assert list(back) == sorted(state)
    for key, tensor in state.items():
        assert back[key].dtype == torch.float32
        torch.testing.assert_close(back[key], tensor.float())


def test_counted_bytes_are_exactly_the_objects_that_rebuild_the_message() -> None:
    content = RecordDict(
        {
            "arrays": tensors_to_record(_state()),
            "metrics": MetricRecord({"num-examples": 7}),
            "config": ConfigRecord({"note": "x"}),
        }
    )
    shipped = {oid: obj.deflate() for oid, obj in get_all_nested_objects(content).items()}
    assert serialized_bytes(content) == sum(len(b) for b in shipped.values())
    rebuilt = inflate_object_from_contents(content.object_id, dict(shipped))
    torch.testing.assert_close(
        record_to_tensors(rebuilt.array_records["arrays"]),
        record_to_tensors(content.array_records["arrays"]),
    )
    assert rebuilt.metric_records["metrics"]["num-examples"] == 7


def test_bytes_grow_with_the_tensor_payload_plus_a_small_header() -> None:
    raw = sum(t.numel() * 4 for t in _state().values())
    size = serialized_bytes(RecordDict({"arrays": tensors_to_record(_state())}))
    assert raw < size < raw + 2048
    bigger = serialized_bytes(RecordDict({"arrays": tensors_to_record(_state(scale=3))}))
    added = 8 * 64 * 2 * 4  # two more 8x64 fp32 blocks in lora_A
    assert abs((bigger - size) - added) < 64
