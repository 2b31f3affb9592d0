"""A ClientApp process that outlives its message ends itself, so that its worker comes back.

A message's TTL is how long the server waits for its reply (``server.exchange`` sets it to the
round's timeout); past it the reply is refused, so a handler still running then is working for
no one. If it hangs (a deadlock, a device stuck in a driver call) it would hold its process for
good: a SuperNode starts a fresh ClientApp process for each message, and each hung one stays;
in simulation it holds a worker (``simulation.ray_workers`` replaces that one too). A timer
started with the message ends the process once the TTL, counted from when the message arrived
here (so a device's clock that is off does not matter), has passed with a grace.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from logging import ERROR

from flwr.app import Context, Message
from flwr.common import log

GRACE_SECONDS = 30.0
EXIT_CODE = 70  # EX_SOFTWARE


def _end(message_type: str, seconds: float) -> None:
    log(
        ERROR,
        "the %s message is still being handled %.0f s after it arrived, past its TTL: "
        "this ClientApp process ends so that its worker can serve the next one",
        message_type,
        seconds,
    )
    os._exit(EXIT_CODE)  # a hung thread cannot be stopped; only its process can


def end_past_deadline(
    msg: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """ClientApp mod: the handler's reply, or this process's end past the message's TTL."""
    seconds = msg.metadata.ttl + GRACE_SECONDS
    timer = threading.Timer(seconds, _end, args=(msg.metadata.message_type, seconds))
    timer.daemon = True
    timer.start()
    try:
        return call_next(msg, context)
    finally:
        timer.cancel()
