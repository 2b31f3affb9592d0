"""Partitions bound to the public keys of the nodes that may hold them.

Without it a node's partition is whatever its node config claims, so any admitted node can claim
another's. With node authentication, the SuperLink knows each node's registered key; a table of
partition -> key fingerprint (``fedtune commands --keys`` writes it next to the keys, and the run
names it in ``server.partition-keys``) lets the server refuse a claim made under any other key.

A fingerprint is the SHA-256 of the key's DER SubjectPublicKeyInfo, so the OpenSSH file that
``fedtune node-key`` writes and the PEM form that the SuperLink stores give the same one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

PARTITION_KEYS_FILE = "partition-keys.json"


def fingerprint(public_key: bytes) -> str | None:
    """The fingerprint of a public key in OpenSSH or PEM form; None if it is neither."""
    for load in (serialization.load_ssh_public_key, serialization.load_pem_public_key):
        try:
            key = load(public_key.strip())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()
    return None


def write_partition_keys(path: Path, public_keys: list[Path]) -> Path:
    """Bind partition i to ``public_keys[i]``; the table's path."""
    table = {}
    for partition, key_file in enumerate(public_keys):
        found = fingerprint(key_file.read_bytes())
        if found is None:
            raise ValueError(f"{key_file} is not a public key in OpenSSH or PEM form")
        table[str(partition)] = found
    path.write_text(json.dumps(table, indent=1) + "\n")
    return path


def read_partition_keys(path: str) -> dict[int, str]:
    """partition -> fingerprint from ``path``; a ``ValueError`` naming what is wrong."""
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"server.partition-keys {path!r}: cannot be read ({err})") from err
    if not isinstance(table, dict):
        raise ValueError(f"server.partition-keys {path!r}: not a JSON object")
    bound = {}
    for partition, key in table.items():
        ok = partition.isdigit() and isinstance(key, str) and len(key) == 64
        if not ok or any(c not in "0123456789abcdef" for c in key):
            raise ValueError(
                f"server.partition-keys {path!r}: entry {partition!r}: expected "
                "a partition number and a 64-digit hex fingerprint"
            )
        bound[int(partition)] = key
    return bound
