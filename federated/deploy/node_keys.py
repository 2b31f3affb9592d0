"""``fedtune node-key``: a SuperNode's key pair for node authentication.

The SuperLink, started with ``--enable-supernode-auth``, admits only nodes whose public key was
registered with ``flwr supernode register KEY.pub``; the node proves it holds the private key
(``flower-supernode --auth-supernode-private-key KEY``). Flower reads both in OpenSSH format and
accepts NIST elliptic curves only.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def make_node_key(private: Path) -> tuple[Path, Path]:
    """An EC (P-384) key pair: ``private`` (OpenSSH, owner-only) and ``private``.pub."""
    public = private.with_name(private.name + ".pub")
    for path in (private, public):
        if path.exists():
            raise FileExistsError(f"{path} exists; a node's key is never overwritten")
    private.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    os.chmod(private, 0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH,
            serialization.PublicFormat.OpenSSH,
        )
        + b"\n"
    )
    return private, public
