"""A Flower app that sends one 7B-sized LoRA adapter to one node and back, and checks it.

The adapter has the shapes of Mistral-7B's rank-32 LoRA on every linear layer of its 32 blocks
(q, k, v, o, gate, up, down; hidden 4096, intermediate 14336, 8 KV heads of 128): 448 arrays of
random numbers from ``seed``, in float32 or as wire.dtype = bfloat16 sends them (numpy's uint16
arrays of bfloat16 bit patterns). The client answers with each number negated (its sign bit
flipped: a payload the SuperLink has not stored yet, so nothing is deduplicated) and the SHA-256
of what it decoded; the server writes what arrived and when to the JSON file ``out``. No fedtune
import: ``flwr run`` ships this file alone in its app (``tests.test_e2e_large_payload``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

HIDDEN, INTERMEDIATE, LAYERS, KV = 4096, 14336, 32, 8 * 128
RANK = 32
# Each adapted linear layer of a block: (in, out).
LINEAR = {
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (HIDDEN, KV),
    "self_attn.v_proj": (HIDDEN, KV),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (HIDDEN, INTERMEDIATE),
    "mlp.up_proj": (HIDDEN, INTERMEDIATE),
    "mlp.down_proj": (INTERMEDIATE, HIDDEN),
}


def adapter_shapes() -> dict[str, tuple[int, int]]:
    """peft's names and shapes: A is [rank, in], B is [out, rank]."""
    shapes = {}
    for layer in range(LAYERS):
        for module, (d_in, d_out) in LINEAR.items():
            name = f"base_model.model.model.layers.{layer}.{module}"
            shapes[f"{name}.lora_A.weight"] = (RANK, d_in)
            shapes[f"{name}.lora_B.weight"] = (d_out, RANK)
    return shapes


# The unsigned integers that hold each dtype's bit patterns, and its sign bit.
BITS = {"float32": (np.uint32, 0x8000_0000), "bfloat16": (np.uint16, 0x8000)}


def _arrays(seed: int, dtype: str) -> Iterator[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    for name, shape in adapter_shapes().items():
        values = rng.standard_normal(shape, dtype=np.float32)
        # bfloat16: float32's upper half, truncated (any pattern would do for the wire).
        yield (
            name,
            values if dtype == "float32" else (values.view(np.uint32) >> 16).astype(np.uint16),
        )


def negated(values: np.ndarray) -> np.ndarray:
    """Each number with its sign bit flipped: float32 and bfloat16 patterns alike."""
    bits, sign = BITS["float32" if values.dtype == np.float32 else "bfloat16"]
    return (values.view(bits) ^ bits(sign)).view(values.dtype)


def digest(arrays: Iterator[tuple[str, np.ndarray]]) -> str:
    """SHA-256 of names, dtypes, shapes and the numbers' bytes."""
    h = hashlib.sha256()
    for name, values in arrays:
        h.update(f"{name}|{values.dtype}|{values.shape}|".encode())
        h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()


def _decoded(record: ArrayRecord) -> Iterator[tuple[str, np.ndarray]]:
    return ((name, record[name].numpy()) for name in record)


client = ClientApp()


@client.train()
def echo(msg: Message, context: Context) -> Message:
    started = time.time()
    record = msg.content.array_records["arrays"]
    back = ArrayRecord({name: Array(negated(values)) for name, values in _decoded(record)})
    info = ConfigRecord({"digest": digest(_decoded(record)), "received": started})
    info["replied"] = time.time()
    return Message(RecordDict({"arrays": back, "info": info}), reply_to=msg)


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    seed, out = int(context.run_config["seed"]), str(context.run_config["out"])
    dtype = str(context.run_config["dtype"])
    record = ArrayRecord({name: Array(values) for name, values in _arrays(seed, dtype)})
    deadline = time.monotonic() + 120
    while not (nodes := list(grid.get_node_ids())):
        if time.monotonic() > deadline:
            raise RuntimeError("no SuperNode connected within 120 s")
        time.sleep(0.2)
    message = Message(
        RecordDict({"arrays": record}), dst_node_id=nodes[0], message_type=MessageType.TRAIN
    )
    sent = time.time()
    (reply,) = grid.send_and_receive([message], timeout=600)
    arrived = time.time()
    info = reply.content.config_records["info"]
    back = reply.content.array_records["arrays"]
    result = {
        "arrays": len(record),
        "numbers": sum(math.prod(shape) for shape in adapter_shapes().values()),
        "array_bytes": sum(len(a.data) for a in record.values()),
        "dtype": dtype,
        "sent_digest": digest(_arrays(seed, dtype)),
        "client_digest": info["digest"],
        "expected_back": digest((name, negated(v)) for name, v in _arrays(seed, dtype)),
        "returned_digest": digest(_decoded(back)),
        "down_seconds": info["received"] - sent,
        "client_seconds": info["replied"] - info["received"],
        "up_seconds": arrived - info["replied"],
        "round_trip_seconds": arrived - sent,
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
