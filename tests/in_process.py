"""A Flower Grid whose nodes are real ClientApps called in this process.

The server's real round code meets the real client handlers without Ray or processes, keeping
the Flower semantics the protocol depends on: every message and node state crosses Flower's
wire format (so nothing but what Flower can carry is shared), a handler that raises becomes the
node's error reply, and then the node state keeps none of that handler's changes. ``tamper`` lets a
test play a server that deviates: it sees every message before delivery and may change it, or
hold it back (None: the node answers that it never got it); ``tamper_reply`` plays a client that
deviates, changing what a node answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.common.serde import (
    context_from_proto,
    context_to_proto,
    message_from_proto,
    message_to_proto,
)
from flwr.supercore.task_identity import TaskIdentity

from client.app import register
from federated.zo.workspace import forget_zo_model
from tests.messages import message

RUN_ID, SERVER_NODE, FIRST_NODE = 7, 0, 101
Tamper = Callable[[Message], Message | None]


@contextmanager
def server_identity(run_id: int = RUN_ID) -> Iterator[None]:
    """What a ServerApp's runtime sets before the server creates messages."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = run_id, SERVER_NODE, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class InProcessGrid:
    """Delivers the server's messages to ``app`` as each node (node ID -> node config)."""

    def __init__(self, app: ClientApp, nodes: dict[int, dict], run_config: dict) -> None:
        self.app = app
        self.contexts = {
            node: Context(RUN_ID, node, dict(config), RecordDict(), dict(run_config))
            for node, config in nodes.items()
        }
        self.tamper: Tamper | None = None
        self.tamper_reply: Callable[[Message], Message] | None = None
        self.delivered: list[Message] = []
        self.held: list[Message] = []  # what ``tamper`` held back
        self.answers: dict[str, Message] = {}  # message ID -> the node's reply
        self._replies: dict[str, Message] = {}
        self._sent: list[str] = []

    def get_node_ids(self) -> list[int]:
        return sorted(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for sent in messages:
            message_id = f"m{len(self._sent)}"
            self._sent.append(message_id)
            msg = self.arrived(sent, message_id)
            if msg is None:
                held = self.arrived(sent, message_id, tamper=False)
                self.held.append(held)
                reply = Message(Error(ErrorCode.NODE_UNAVAILABLE, "never delivered"), reply_to=held)
            else:
                self.delivered.append(msg)
                reply = self.answers[message_id] = self.answer(msg)
            self._replies[message_id] = reply
            ids.append(message_id)
        return ids

    def pull_messages(self, ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in ids if i in self._replies]

    def arrived(self, sent: Message, message_id: str, tamper: bool = True) -> Message | None:
        """``sent`` as its node receives it: with a message ID, through ``tamper``."""
        meta = sent.metadata
        msg = message(
            sent.content,
            src=SERVER_NODE,
            dst=meta.dst_node_id,
            run_id=meta.run_id,
            message_type=meta.message_type,
            message_id=message_id,
            group_id=meta.group_id,
        )
        msg = _wire(msg)
        return self.tamper(msg) if self.tamper and tamper else msg

    def answer(self, msg: Message) -> Message:
        """The node's reply, as Flower makes it."""
        node = msg.metadata.dst_node_id
        context = context_from_proto(context_to_proto(self.contexts[node]))
        try:
            reply = self.app(msg, context)
        except Exception as err:  # noqa: BLE001 - Flower turns any exception into the reply
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, str(err)), reply_to=msg)
        self.contexts[node] = context
        return _wire(self.tamper_reply(reply) if self.tamper_reply else reply)


def _wire(msg: Message) -> Message:
    """``msg`` as it comes out of Flower's wire format."""
    return message_from_proto(message_to_proto(msg))


def run_server(grid: InProcessGrid, run_config: dict) -> None:
    """The real ServerApp's whole run, its clients ``grid``'s nodes."""
    from server.app import main

    with server_identity():
        main(grid, Context(RUN_ID, SERVER_NODE, {}, RecordDict(), dict(run_config)))


def run_federation(
    out: Path,
    name: str,
    run: dict,
    clients: int = 4,
    *,
    tamper: Tamper | None = None,
    tamper_reply: Callable[[Message], Message] | None = None,
    node_configs: dict[int, dict] | None = None,
) -> Path:
    """A whole run of ``clients`` nodes, partition i of ``clients`` each (plus what
    ``node_configs`` adds, by partition); its results folder ``out/name``. It starts from w0
    as a fresh process would: a zeroth-order model another run moved and replayed back is
    only w0 to within rounding."""
    forget_zo_model()
    nodes = {FIRST_NODE + i: {"partition-id": i, "num-partitions": clients} for i in range(clients)}
    for partition, extra in (node_configs or {}).items():
        nodes[FIRST_NODE + partition].update(extra)
    config = {**run, "output-dir": str(out), "run-name": name}
    grid = InProcessGrid(register(ClientApp()), nodes, config)
    grid.tamper, grid.tamper_reply = tamper, tamper_reply
    run_server(grid, config)
    return out / name
