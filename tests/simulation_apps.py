"""The real server and client apps for Flower's Python simulation API (``run_simulation``).

That API passes no run config, so a ClientApp mod and a thin ServerApp put the test's config
(from an environment variable, which Ray's workers inherit) into the context.
``FEDTUNE_TEST_CORRUPT`` names, per message type ("train", "evaluate") and partition, how a mod
corrupts that partition's replies (``tests.bad_replies``); with ``FEDTUNE_TEST_SECAGG_DROP=1``
partitions 0 and 1 drop out in the middle of a SecAgg+ round; ``FEDTUNE_TEST_FLAKY`` (a share and
a number of seconds) makes that share of training messages, drawn by (partition, round), fail
or hang for those seconds, half each.
"""

from __future__ import annotations

import json
import os
import time
import zlib

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

import client.app as real_client
import server.app as real_server
from tests import bad_replies

CONFIG_ENV = "FEDTUNE_TEST_RUN_CONFIG"
CORRUPT_ENV = "FEDTUNE_TEST_CORRUPT"
DROP_ENV = "FEDTUNE_TEST_SECAGG_DROP"
FLAKY_ENV = "FEDTUNE_TEST_FLAKY"


def _run_config() -> dict:
    return json.loads(os.environ[CONFIG_ENV])


def _inject_config(msg: Message, context: Context, call_next) -> Message:
    # A ClientApp's context refuses a new run_config; hand the handler a copy that has it.
    configured = Context(
        run_id=context.run_id,
        node_id=context.node_id,
        node_config=context.node_config,
        state=context.state,
        run_config=_run_config(),
    )
    return call_next(msg, configured)


def _corrupt(msg: Message, context: Context, call_next) -> Message:
    reply = call_next(msg, context)
    kind = msg.metadata.message_type
    chosen = json.loads(os.environ.get(CORRUPT_ENV, "{}")).get(kind, {})
    name = chosen.get(str(context.node_config["partition-id"]))
    if name is None or reply.has_error():
        return reply
    table = "zo-train" if kind == "train" and _run_config().get("mode") == "zo" else kind
    content = bad_replies.KINDS[table][name](reply.content, context.state, msg.content)
    return Message(content=content, reply_to=msg)


def _drop_out(msg: Message, context: Context, call_next) -> Message:
    # With FEDTUNE_TEST_SECAGG_DROP=1, partitions 0 and 1 fail in SecAgg+'s collect stage,
    # after they shared their secrets: the server must still get the others' sum.
    dropping = os.environ.get(DROP_ENV) == "1" and context.node_config["partition-id"] < 2
    if dropping and msg.metadata.message_type == "train.secagg_collect":
        raise RuntimeError("dropped out before sending the masked update")
    return call_next(msg, context)


def _flaky(msg: Message, context: Context, call_next) -> Message:
    settings = json.loads(os.environ.get(FLAKY_ENV, "{}"))
    if not settings or msg.metadata.message_type != "train":
        return call_next(msg, context)
    server_round = msg.content.config_records["config"]["server-round"]
    draw = zlib.crc32(f"{context.node_config['partition-id']}/{server_round}".encode())
    chance = (draw % 1000) / 1000
    if chance < settings["share"] / 2:
        raise RuntimeError("this device crashed in the middle of the round")
    if chance < settings["share"]:
        time.sleep(settings["hang_seconds"])  # past the round's timeout
    return call_next(msg, context)


client = real_client.register(ClientApp(mods=[_inject_config, _corrupt, _drop_out, _flaky]))

server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    context.run_config = _run_config()
    real_server.main(grid, context)
