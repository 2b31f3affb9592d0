"""An operator's request that a run stop after its current round, through its results folder.

``flwr stop`` marks a run stopped at once, but a simulation hears of it only at its next
heartbeat (every 20-25 s), and goes on training until then: Ctrl-C on ``fedtune run`` could let
a run finish. So ``fedtune run`` also leaves this request in the run's folder; the server takes
it before the next round starts, and stops there, its last checkpoint complete. The request is
removed once taken (or once the run has gone), so that the resumed run does not stop at once.
"""

from __future__ import annotations

import time
from pathlib import Path

STOP_FILE = "stop-requested"


def request_stop(folder: Path) -> None:
    (folder / STOP_FILE).write_text("fedtune run was interrupted; the server stops the run\n")


def take_stop_request(folder: Path) -> bool:
    """Whether a stop was requested; the request is removed."""
    try:
        (folder / STOP_FILE).unlink()
    except FileNotFoundError:
        return False
    return True


def await_stop(folder: Path, seconds: float) -> bool:
    """Wait up to ``seconds`` for the server to take the request; whether it did. A request
    left after that (the run had already gone) is removed."""
    deadline = time.monotonic() + seconds
    while (folder / STOP_FILE).exists():
        if time.monotonic() > deadline:
            take_stop_request(folder)
            return False
        time.sleep(0.25)
    return True
