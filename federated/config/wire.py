"""The wire section: the precision in which LoRA tensors travel between server and clients."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class WireSettings:
    dtype: str = option(
        "float32",
        "mode lora: the precision of the adapter tensors the server broadcasts and the clients "
        "send back (bfloat16 and float16 halve the bytes); each side decodes them to float32, "
        "so the server keeps, screens and aggregates float32 and the clients train from it. "
        "Seed indices and zeroth-order scalars, and SecAgg+'s masked integers, travel as they "
        "are.",
        choices=("float32", "bfloat16", "float16"),
    )
