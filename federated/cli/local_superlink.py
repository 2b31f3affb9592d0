"""Which SuperLink ``fedtune run`` is about to use, said before the run starts.

For a local connection (``address = ":local:"``, Flower's default), ``flwr run`` uses whatever
SuperLink answers on the machine's local port (39091, or ``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``)
and starts one only if none does. A SuperLink that another checkout started runs this run's
ServerApp from that checkout's folder, with that folder's environment: the results land there,
and a ``RAY_ADDRESS`` set for this run is not seen (the simulation reads the environment its
SuperLink started with; Flower has no option that passes a Ray address to a running one). So
``fedtune run`` refuses such a SuperLink, naming it, and says which one it uses otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

LOCAL_ADDRESSES = (":local:", ":local-in-memory:")
RAY_ADDRESS = "RAY_ADDRESS"


class ForeignSuperLink(Exception):
    """A running local SuperLink that this run must not use; the message says what to do."""


@dataclass(frozen=True)
class LocalSuperLink:
    pid: int
    port: str
    folder: Path | None  # where it was started; None: not readable (another user's process)
    ray_address: str | None  # RAY_ADDRESS in its environment

    def __str__(self) -> str:
        return f"the local SuperLink at 127.0.0.1:{self.port} (pid {self.pid})"


def local_port() -> str:
    """The port ``flwr`` looks for (and starts) its local SuperLink on."""
    return os.environ.get("FLWR_LOCAL_SUPERLINK_HTTP_API_PORT", "39091")


def _is_superlink_on(cmdline: list[str], port: str) -> bool:
    named = any(Path(part).name == "flower-superlink" for part in cmdline[:2])
    pairs = zip(cmdline, cmdline[1:], strict=False)
    return named and any(a == "--port" and b == port for a, b in pairs)


def running_local_superlink(port: str) -> LocalSuperLink | None:
    """The ``flower-superlink`` process serving ``port``, if one runs on this machine."""
    for proc in psutil.process_iter(["cmdline"]):
        if not _is_superlink_on(proc.info["cmdline"] or [], port):
            continue
        try:
            folder: Path | None = Path(proc.cwd())
            ray_address = proc.environ().get(RAY_ADDRESS)
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            folder, ray_address = None, None
        return LocalSuperLink(proc.pid, port, folder, ray_address)
    return None


def connection_address(name: str | None) -> str | None:
    """The address of connection ``name`` (the default one if None) in the Flower home's
    ``config.toml``; None where it cannot be read (``flwr run`` then says why itself)."""
    from flwr.cli.flower_config import read_superlink_connection

    try:
        connection = read_superlink_connection(name)
    except Exception:  # noqa: BLE001  (click's and typer's exits: flwr run reports them)
        return None
    if connection.address is None and connection.options is not None:
        return LOCAL_ADDRESSES[0]  # Flower's older form of a local connection
    return connection.address


def _how_to_proceed(superlink: LocalSuperLink) -> str:
    return (
        f"stop it (kill {superlink.pid}) and run again, or give this run a local SuperLink of "
        "its own on free ports (FLWR_LOCAL_SUPERLINK_HTTP_API_PORT and "
        "FLWR_LOCAL_CONTROL_API_PORT)"
    )


def superlink_in_use(name: str | None, here: Path) -> str | None:
    """One line naming the SuperLink the run will use and where its results go, or None where
    there is nothing to say; ``ForeignSuperLink`` if the run must not use it."""
    address = connection_address(name)
    ray_address = os.environ.get(RAY_ADDRESS)
    if address is None:
        return None
    if address not in LOCAL_ADDRESSES:
        if ray_address:
            return (
                f"{RAY_ADDRESS} is ignored: this run goes to the SuperLink at {address}, "
                "whose SuperNodes run its clients"
            )
        return None
    superlink = running_local_superlink(local_port())
    if superlink is None:
        return (
            f"flwr starts a local SuperLink on 127.0.0.1:{local_port()} in {here} (it keeps "
            "running after the run); a relative output-dir is under this folder"
        )
    if superlink.folder is None:
        raise ForeignSuperLink(
            f"{superlink} belongs to another user: this run would run in its folder and "
            f"environment; {_how_to_proceed(superlink)}"
        )
    if superlink.folder.resolve() != here.resolve():
        raise ForeignSuperLink(
            f"{superlink} was started in {superlink.folder}: this run would run there, in that "
            f"folder's environment, and its results land there; {_how_to_proceed(superlink)}"
        )
    if ray_address and ray_address != superlink.ray_address:
        raise ForeignSuperLink(
            f"{RAY_ADDRESS}={ray_address} is set, but {superlink} runs simulations with "
            f"{RAY_ADDRESS}={superlink.ray_address or '(unset)'}, and a running SuperLink "
            f"keeps its own; {_how_to_proceed(superlink)}"
        )
    cluster = ""
    if superlink.ray_address:
        cluster = f", its simulations on the Ray cluster at {superlink.ray_address}"
    return (
        f"using {superlink}, started in {superlink.folder}{cluster}; a relative output-dir is "
        "under that folder"
    )
