"""Keys of SecAgg+: key pairs, agreed keys, the sharing graph and its threshold.

The primitives are Flower's (elliptic-curve Diffie-Hellman with HKDF, Fernet encryption and
Shamir sharing, on the ``cryptography`` and ``pycryptodome`` packages); the graph is SecAgg+'s:
each client shares with the clients next to it on a ring of the sampled nodes, not with all.
"""

from __future__ import annotations

import math

from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)


def new_key_pair() -> tuple[bytes, bytes]:
    """(secret key, public key), serialised."""
    secret, public = generate_key_pairs()
    return private_key_to_bytes(secret), public_key_to_bytes(public)


def agree(secret_key: bytes, public_key: bytes) -> bytes:
    """The key two parties agree on from one's secret key and the other's public key."""
    return generate_shared_key(bytes_to_private_key(secret_key), bytes_to_public_key(public_key))


def neighbours(nodes: list[int], share_fraction: float) -> dict[int, list[int]]:
    """Each node's sharing group on a ring of the sorted nodes, itself included: an odd number
    of nodes centred on it, ``share_fraction`` of all of them (all of them at 1.0)."""
    ring = sorted(nodes)
    size = max(3, round(share_fraction * len(ring)))
    size = min(len(ring), size + (size % 2 == 0))
    half = size // 2
    groups = {}
    for i, node in enumerate(ring):
        if size == len(ring):
            groups[node] = list(ring)
        else:
            groups[node] = sorted(ring[(i + off) % len(ring)] for off in range(-half, half + 1))
    return groups


def threshold(group_size: int, fraction: float) -> int:
    """Shares needed to rebuild a secret of a group of ``group_size``: at least 2, and more
    than half, so that the server can never rebuild both secrets of one client."""
    return min(group_size, max(2, group_size // 2 + 1, math.ceil(fraction * group_size)))
