"""The secure-aggregation section: SecAgg+'s sharing graph, threshold and quantization."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class SecAggSettings:
    enabled: bool = option(
        False,
        "SecAgg+: clients mask their updates so that the server learns only their sum "
        "(linear strategies: fedavg, ffa-lora, fedsa-lora's shared A, fedkseed).",
    )
    num_shares: float = option(
        1.0,
        "Neighbours each client secret-shares its keys with, as a share of the sampled clients "
        "(1.0: all, plain SecAgg; less: SecAgg+'s sparse graph).",
        above=0.0,
        maximum=1.0,
    )
    reconstruction_threshold: float = option(
        0.67,
        "Shares needed to rebuild a client's secrets, as a share of its neighbours, and always "
        "more than half: more tolerates fewer dropouts and more peers colluding with the "
        "server. Each client computes it from this value; a lower one sent by the server is "
        "refused.",
        above=0.0,
        maximum=1.0,
    )
    min_group_size: int = option(
        3,
        "The smallest sharing group a client joins (itself included): the fewest clients "
        "whose sum can hide its update. A client refuses a smaller group.",
        minimum=3,
    )
    clipping_range: float = option(
        8.0,
        "Each entry of a client's masked update is clipped to +-this before quantization.",
        above=0.0,
    )
    quantization_bits: int = option(
        22, "Bits of each quantized entry (the masks work modulo 2^32).", minimum=8, maximum=26
    )
    max_weight: float = option(
        1000.0,
        "A client's weight (its examples) is capped here and sent masked as weight / max-weight.",
        above=0.0,
    )
