"""``fedtune check-link``: can a device reach its SuperLink, and if not, why.

Flower 1.41's SuperNode retries a connection that fails forever, logging only ``Connection
attempt failed, retrying``: a wrong host, a closed port or a name that does not resolve looks
like a SuperLink that is merely slow. Its ``--max-retries`` and ``--max-wait-time`` would bound
that, but they bound every call the node makes for its whole life: a node that lost its
SuperLink for longer gives up, and then stays running without reconnecting when the SuperLink
returns. So the printed node line checks the address once, here, before Flower's own process
starts, and Flower keeps its unbounded retries for the outages that come later.

The check follows what the node will do: resolve the name, open TCP, shake hands with TLS
against the node's root certificates (the name in the address must be in the SuperLink's
certificate) and find the Fleet API there, each step within ``timeout`` seconds.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from cryptography import x509

# A route of Flower's Fleet API, which nodes POST to: a SuperLink answers this GET with 405
# (the route is there, for another method) and changes nothing; another HTTP server answers 404.
_PROBE = b"GET /v1/fleet/pull-messages HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the certificate is
# good, but does not name the host the node was given.
_NAME_MISMATCH = (62, 64)


class UnreachableSuperLink(Exception):
    """The SuperLink cannot be reached; the message says why and what to check."""


def split_address(address: str) -> tuple[str, int]:
    """HOST and PORT of ``HOST:PORT`` (an IPv6 host in brackets, as Flower takes it)."""
    host, _, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--superlink {address!r} is not HOST:PORT")
    return host, int(port)


def _names_in_certificate(der: bytes) -> list[str]:
    """The host names and addresses a certificate is valid for."""
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in names.get_values_for_type(x509.DNSName)] + [
        str(n) for n in names.get_values_for_type(x509.IPAddress)
    ]


def _certificate_names(host: str, port: int, timeout: float) -> list[str]:
    """The names in the certificate the server presents, read without verifying it."""
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        unverified.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return _names_in_certificate(der) if der else []


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UnreachableSuperLink(
            f"name does not resolve ({err.strerror}): check the host name and the device's DNS"
        ) from None
    try:
        return socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        raise UnreachableSuperLink(
            "connection refused: nothing listens on that port there (a wrong port, or the "
            "SuperLink is not running)"
        ) from None
    except TimeoutError:
        raise UnreachableSuperLink(
            f"no answer within {timeout:g} s: a wrong host, or a firewall drops the connection"
        ) from None
    except OSError as err:
        raise UnreachableSuperLink(f"{err.strerror or err}") from None


def _trusting(ca: Path) -> ssl.SSLContext:
    """A TLS client that trusts ``ca`` and checks the host name, as the node's does."""
    try:
        return ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as err:
        raise ValueError(f"cannot read the root certificates {ca}: {err}") from None


def _handshake(
    raw: socket.socket, host: str, port: int, trusting: ssl.SSLContext, ca: Path, timeout: float
) -> ssl.SSLSocket:
    try:
        return trusting.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as err:
        if err.verify_code in _NAME_MISMATCH:
            names = ", ".join(_certificate_names(host, port, timeout)) or "no names"
            raise UnreachableSuperLink(
                f"its certificate is not valid for {host} (it names {names}): reach it at one "
                f"of those, or make its certificate with fedtune certs --host {host}"
            ) from None
        raise UnreachableSuperLink(
            f"its certificate does not verify against {ca} ({err.verify_message}): copy the "
            "ca.crt that fedtune certs wrote with the SuperLink's certificate"
        ) from None
    except ssl.SSLError as err:
        raise UnreachableSuperLink(
            f"the TLS handshake failed ({err.reason}): a SuperLink started with --insecure "
            "takes --insecure nodes only, or this port is not the SuperLink's"
        ) from None
    except TimeoutError:
        raise UnreachableSuperLink(f"no TLS handshake within {timeout:g} s") from None


def _fleet_api_answer(conn: socket.socket, host: str, tls: bool, timeout: float) -> None:
    try:
        conn.sendall(_PROBE % host.encode())
        reply = conn.recv(64)
    except TimeoutError:
        raise UnreachableSuperLink(
            f"no HTTP answer within {timeout:g} s: this port is not the SuperLink's"
        ) from None
    except OSError:
        reply = b""  # reset by the other side: as good as closed
    if not reply and not tls:
        raise UnreachableSuperLink(
            "it closed the connection on a plaintext request, as a SuperLink with TLS does: "
            "give --root-certificates CA instead of --insecure"
        )
    if not reply.startswith(b"HTTP/"):
        raise UnreachableSuperLink(
            "it does not answer as an HTTP server: this port is not the SuperLink's"
        )
    if reply.split(maxsplit=2)[1:2] == [b"404"]:
        raise UnreachableSuperLink(
            "an HTTP server answers there, but without Flower's Fleet API: this port is not "
            "the SuperLink's (a SuperNode's own --port?)"
        )


def check_link(address: str, root_certificates: Path | None, timeout: float = 5.0) -> str:
    """What the node will find at ``address``, as one line; ``UnreachableSuperLink`` if it
    cannot reach a SuperLink there. ``root_certificates`` None: a plaintext (``--insecure``)
    node."""
    host, port = split_address(address)
    # A certificate file the device lacks is its own mistake, found before the network is tried.
    trusting = None if root_certificates is None else _trusting(root_certificates)
    conn = _connect(host, port, timeout)
    try:
        if trusting is not None and root_certificates is not None:
            conn = _handshake(conn, host, port, trusting, root_certificates, timeout)
        _fleet_api_answer(conn, host, root_certificates is not None, timeout)
    finally:
        conn.close()
    how = "plaintext" if root_certificates is None else f"TLS verified by {root_certificates}"
    return f"the SuperLink at {address} answers ({how})"
