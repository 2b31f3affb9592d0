"""Send a round's messages and collect the replies, showing progress and counting bytes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import INFO

from flwr.app import Message
from flwr.common import log
from flwr.serverapp import Grid

from federated.protocol.wire import serialized_bytes

POLL_SECONDS = 0.5


def progress(stage: str) -> Callable[[int, int], None]:
    """A progress line per reply of ``stage`` ("train", "evaluate", a SecAgg+ stage)."""
    return lambda done, total: log(INFO, "    %s: %d/%d clients done", stage, done, total)


@dataclass
class Exchange:
    """The replies of one send-and-receive, with the exact bytes each node sent and received."""

    replies: list[Message] = field(default_factory=list)
    bytes_down: dict[int, int] = field(default_factory=dict)
    bytes_up: dict[int, int] = field(default_factory=dict)
    timed_out: list[int] = field(default_factory=list)
    # Nodes the SuperLink answered for (it lost them: no heartbeat), with its reason.
    unreachable: dict[int, str] = field(default_factory=dict)


def _link_error(reply: Message) -> str:
    reason = reply.error.reason if reply.has_error() else "a reply from another node"
    return f"unreachable: {' '.join(reason.split())[:200]}"


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    *,
    timeout: float,
    on_reply: Callable[[int, int], None] | None = None,
) -> Exchange:
    """Push ``messages``, then pull replies until all are back or ``timeout`` seconds pass.

    Flower's own ``send_and_receive`` polls every 3 s and reports nothing until the end; this
    polls faster and calls ``on_reply(done, total)`` as replies arrive. Each message expires when
    the server stops waiting for it, so a node that is late is not handed stale work, a worker
    still running it can be reclaimed (``simulation.ray_workers``), and a late reply is refused.
    """
    messages = list(messages)
    result = Exchange()
    expires = time.time() + timeout
    for msg in messages:
        msg.metadata.ttl = expires - msg.metadata.created_at
        result.bytes_down[msg.metadata.dst_node_id] = serialized_bytes(msg)
    pending = dict(
        zip(grid.push_messages(messages), (m.metadata.dst_node_id for m in messages), strict=True)
    )
    total = len(pending)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        arrived = list(grid.pull_messages(list(pending)))
        for reply in arrived:
            node = pending.pop(reply.metadata.reply_to_message_id, None)
            if node is None:
                continue  # not a reply to this exchange's messages
            if reply.metadata.src_node_id != node:
                result.unreachable[node] = _link_error(reply)
                continue
            result.bytes_up[node] = serialized_bytes(reply)
            result.replies.append(reply)
            if on_reply:
                on_reply(len(result.replies), total)
        if pending and not arrived:
            time.sleep(POLL_SECONDS)
    result.timed_out = sorted(pending.values())
    return result
