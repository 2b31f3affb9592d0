"""``fedtune certs``: a certificate authority and the SuperLink's certificate, for TLS.

The SuperLink serves TLS with ``--ssl-ca-certfile ca.crt --ssl-certfile server.pem
--ssl-keyfile server.key``; every SuperNode and ``flwr`` CLI trusts ``ca.crt`` (its
``--root-certificates``). The SuperLink's certificate names every host name and address that
nodes will reach it at: a name that is not in it fails the TLS handshake.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.crt", "ca.key", "server.pem", "server.key"


@dataclass(frozen=True)
class CertificateFiles:
    """Where ``fedtune certs`` writes: the CA's certificate and key, the SuperLink's."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_folder(cls, folder: Path) -> CertificateFiles:
        return cls(*(folder / name for name in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)))

    def all(self) -> tuple[Path, ...]:
        return self.ca_cert, self.ca_key, self.server_cert, self.server_key


def subject_names(hosts: list[str]) -> list[x509.GeneralName]:
    """The certificate's subject alternative names: an IP address entry for each address, a
    DNS entry for each host name. A bad name is refused with the name in the message."""
    if not hosts:
        raise ValueError("name at least one host name or address the SuperLink is reached at")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        labels = host.rstrip(".").split(".")
        if not all(
            label
            and len(label) <= 63
            and label.replace("-", "").isalnum()
            and not label.startswith("-")
            for label in labels
        ):
            raise ValueError(f"{host!r} is neither an IP address nor a valid host name")
        names.append(x509.DNSName(host))
    return names


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(path, 0o600)  # private: readable by its owner only


def make_certificates(folder: Path, hosts: list[str], days: int = 365) -> CertificateFiles:
    """A CA and a SuperLink certificate signed by it, valid for ``hosts``, in ``folder``.
    Existing files are never overwritten: a CA that nodes already trust must stay."""
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    names = subject_names(hosts)
    files = CertificateFiles.in_folder(folder)
    existing = [p for p in files.all() if p.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]} exists; certificates are never overwritten")
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("fedtune CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(files.ca_key, ca_key)
    files.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(files.server_key, server_key)
    return files
