"""``fedtune check-link`` names the cause of each wrong SuperLink address within seconds, with
exit status 1, against servers on loopback that answer as a SuperLink's Fleet API does (405 to
its probe) or as another HTTP server does (404). The end-to-end test runs the same checks
against a real SuperLink (tests/test_e2e_deployment.py)."""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from federated.cli.main import main
from federated.deploy.certificates import make_certificates


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, status: bytes, tls: ssl.SSLContext | None) -> None:
        self.status, self.tls = status, tls
        super().__init__(("0.0.0.0", 0), _Answer)  # 127.0.0.2 reaches it too


class _Answer(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        conn = self.request
        try:
            if self.server.tls is not None:
                conn = self.server.tls.wrap_socket(conn, server_side=True)
            conn.recv(1024)
            conn.sendall(b"HTTP/1.1 " + self.server.status + b"\r\nContent-Length: 0\r\n\r\n")
        except (OSError, ssl.SSLError):
            pass  # a client that gave up on the handshake


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs")
    make_certificates(folder / "ours", ["127.0.0.1"])
    make_certificates(folder / "other", ["127.0.0.1"])
    return folder


def _serve(status: bytes, tls: ssl.SSLContext | None) -> Iterator[int]:
    server = _Server(status, tls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def superlink(certs: Path) -> Iterator[int]:
    """A TLS server answering as the SuperLink's Fleet API."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certs / "ours" / "server.pem", certs / "ours" / "server.key")
    yield from _serve(b"405 Method Not Allowed", tls)


@pytest.fixture(scope="module")
def other_http(certs: Path) -> Iterator[int]:
    """A plaintext HTTP server that is not a SuperLink (a SuperNode's own port, say)."""
    yield from _serve(b"404 Not Found", None)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("address", "trust", "line"),
    [
        ("127.0.0.1:{closed}", "ours", "connection refused"),
        ("fl.example.invalid:{link}", "ours", "name does not resolve"),
        ("127.0.0.2:{link}", "ours", "its certificate is not valid for 127.0.0.2 (it names "),
        ("127.0.0.1:{link}", "other", "its certificate does not verify against"),
        ("127.0.0.1:{link}", None, "it closed the connection on a plaintext request"),
        ("127.0.0.1:{http}", "ours", "the TLS handshake failed"),
        ("127.0.0.1:{http}", None, "without Flower's Fleet API"),
    ],
)
def test_a_wrong_address_gets_its_cause_in_one_line_and_exit_1(
    superlink, other_http, certs, capsys, address, trust, line
) -> None:
    target = address.format(link=superlink, http=other_http, closed=_closed_port())
    how = (
        ["--insecure"] if trust is None else ["--root-certificates", str(certs / trust / "ca.crt")]
    )
    started = time.monotonic()
    assert main(["check-link", "--superlink", target, *how, "--timeout", "3"]) == 1
    assert time.monotonic() - started < 10
    err = capsys.readouterr().err
    assert err.startswith(f"fedtune check-link: cannot reach the SuperLink at {target}: ")
    assert line in err and err.count("\n") == 1


def test_the_superlink_itself_passes(superlink, certs, capsys) -> None:
    ca = certs / "ours" / "ca.crt"
    args = ["check-link", "--superlink", f"127.0.0.1:{superlink}", "--root-certificates", str(ca)]
    assert main(args) == 0
    assert (
        capsys.readouterr().out
        == f"the SuperLink at 127.0.0.1:{superlink} answers (TLS verified by {ca})\n"
    )
