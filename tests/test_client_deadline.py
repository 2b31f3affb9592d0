"""A ClientApp process whose handler hangs past its message's TTL ends itself (so that its
worker, a SuperNode's process or a simulation's actor, can serve the next message); a handler
that answers in time leaves the process alone."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.simulate import ROOT

_HANDLE = """
import sys, threading, time
from flwr.app import Message, RecordDict
import client.deadline as deadline
from tests.in_process import server_identity
deadline.GRACE_SECONDS = 0.0
with server_identity():
    msg = Message(RecordDict(), dst_node_id=1, message_type="train", ttl=float(sys.argv[1]))
def handler(m, c):
    if sys.argv[2] == "hang":
        threading.Event().wait()
    return m
deadline.end_past_deadline(msg, None, handler)
time.sleep(1.5)  # the timer, had it not been cancelled, would have fired by now
print("answered")
"""


def _handle(ttl: float, how: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _HANDLE, str(ttl), how],
        cwd=ROOT,
        timeout=60,
        capture_output=True,
        text=True,
    )


# A child process of its own (about 8 s): the end-to-end layer's.
@pytest.mark.slow
def test_a_handler_hanging_past_the_ttl_ends_its_process() -> None:
    started = time.monotonic()
    hung = _handle(1.0, "hang")
    assert hung.returncode == 70 and "past its TTL" in hung.stdout + hung.stderr
    assert time.monotonic() - started < 30


# A child process of its own (about 8 s): the end-to-end layer's.
@pytest.mark.slow
def test_a_handler_that_answers_in_time_keeps_its_process() -> None:
    answered = _handle(1.0, "answer")
    assert answered.returncode == 0 and "answered" in answered.stdout
