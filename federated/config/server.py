"""The server section: how long a round waits, which updates it rejects."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class ServerSettings:
    round_timeout: float = option(3600.0, "Seconds to wait for the replies of a round.", above=0.0)
    round_retries: int = option(
        2,
        "Tries a round gets again when fewer than strategy.min-train-nodes sound replies "
        "arrive; then the run stops as failed, its last checkpoint kept.",
        minimum=0,
    )
    node_wait_timeout: float = option(
        300.0,
        "Seconds to wait for strategy.min-available-nodes nodes to connect before round 1, "
        "and for each to say which data partition it holds (0: forever); then the run stops "
        "as failed.",
        minimum=0.0,
    )
    max_update_norm: float = option(
        1e4,
        "Reject a reply whose update has an L2 norm above this (a poisoned or diverged client); "
        "each weight is also held to the furthest AdamW can move it in the round's steps.",
        above=0.0,
    )
    max_zo_scalar: float = option(
        1000.0,
        "Reject a zeroth-order reply with a scalar gradient larger than this in size (with "
        "zo.momentum, a seed's total: this over 1 − momentum).",
        above=0.0,
    )
    max_examples: int = option(
        0,
        "Reject a training reply claiming more examples than this (0: more than its partition "
        "holds in the server's copy of the split, for as many partitions as nodes connected).",
        minimum=0,
    )
    partition_keys: str = option(
        "",
        "A JSON file binding each partition to a node's public key (fedtune commands --keys "
        "writes partition-keys.json): a claim made under another key is refused. Needs node "
        "authentication; without it, a partition that two nodes claim goes to neither.",
    )
    keep_checkpoints: bool = option(
        False,
        "Keep every round's checkpoint as checkpoints/round-<N>.safetensors beside the last one "
        "(fedtune generate, evaluate and export then take --round N).",
    )
