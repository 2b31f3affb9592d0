"""Keys of SecAgg+: key pairs, agreed keys, the sharing graph and its threshold.

The primitives are Flower's (elliptic-curve Diffie-Hellman with HKDF, Fernet encryption and
Shamir sharing, on the ``cryptography`` and ``pycryptodome`` packages), plus Ed25519 signatures
for the survivor check; the graph is SecAgg+'s: each client shares with the clients next to it
on a ring of the sampled nodes, not with all.
"""

from __future__ import annotations

import math

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
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


def new_signing_pair() -> tuple[bytes, bytes]:
    """(signing key, verifying key), 32 raw bytes each."""
    secret = Ed25519PrivateKey.generate()
    return secret.private_bytes_raw(), secret.public_key().public_bytes_raw()


def sign(signing_key: bytes, statement: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(signing_key).sign(statement)


def signed_by(verifying_key: bytes, statement: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the holder of ``verifying_key``'s on ``statement``; a malformed
    key or signature is no signature."""
    try:
        Ed25519PublicKey.from_public_bytes(verifying_key).verify(signature, statement)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


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
    than half. Each member answers the unmask stage once, giving a share of a neighbour's mask
    seed or of its mask key, never both; with t > k/2 no server alone collects t of each. With
    c members colluding with the server (their shares come free) it takes c >= 2t - k."""
    return min(group_size, max(2, group_size // 2 + 1, math.ceil(fraction * group_size)))
