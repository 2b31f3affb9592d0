"""A client's SecAgg+ round as a state machine: every stage at most once, in order, in one round.

A server that deviates from the protocol learns one client's update by asking a stage twice:
``unmask`` once with the client's neighbour X active and once with X dropped gives both halves
of X's secrets, and ``collect`` again draws fresh noise under the same masks. So a client keeps,
in its node state, the round it is in (the run and the server's group ID), the stage it reached,
and every round it has started in this run. A stage that is not the next one of the current
round (replayed, skipped, out of order, of another round), or a setup of a round already
started, is refused, and the round's secrets are erased: nothing the server asks afterwards can
draw on them. A round that ends (unmasked, or refused) erases them too.

The refusal is this client's error reply, not an exception: Flower keeps a handler's changes to
the node state only when it returns, and the erasure must stick.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import WARNING

from flwr.app import ConfigRecord, Context, Error, Message
from flwr.common import log
from flwr.common.constant import ErrorCode

from federated.secagg import protocol as p

_ROUND, _STAGE, _STARTED = "round", "stage", "started"
Handler = Callable[[Message, Context, ConfigRecord], Message]


class StageRefused(ValueError):
    """The server asked for a stage this client's protocol state does not allow."""


def _state(context: Context) -> ConfigRecord:
    if p.STATE not in context.state.config_records:
        context.state.config_records[p.STATE] = ConfigRecord({_STARTED: []})
    return context.state.config_records[p.STATE]


def erase(state: ConfigRecord) -> None:
    """Forget the round and its secrets; remember only which rounds were started."""
    started = list(state.get(_STARTED, []))
    state.clear()
    state[_STARTED] = started


def current_round(state: ConfigRecord) -> str:
    """The identity of the round under way (``protocol.round_identity``)."""
    return str(state[_ROUND])


def _enter(state: ConfigRecord, stage: str, identity: str) -> None:
    """Move to ``stage`` of round ``identity``, or raise ``StageRefused``."""
    if stage == p.SETUP:
        if identity in state[_STARTED]:
            raise StageRefused(f"setup of round {identity}, which this node already started")
        erase(state)  # an unfinished earlier round is abandoned with its secrets
        state[_STARTED] = [*state[_STARTED], identity]
        state[_ROUND] = identity
    elif state.get(_ROUND) != identity:
        current = state.get(_ROUND)
        raise StageRefused(
            f"{stage} of round {identity}, but "
            + (f"this node is in round {current}" if current else "no round is under way")
        )
    else:
        expected = p.STAGES[p.STAGES.index(str(state[_STAGE])) + 1]
        if stage != expected:
            raise StageRefused(f"{stage} after {state[_STAGE]}: the next stage is {expected}")
    state[_STAGE] = stage


def _refusal(msg: Message, reason: str) -> Message:
    return Message(
        Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"SecAgg+ refused: {reason}"),
        reply_to=msg,
    )


def stage(name: str, handler: Handler) -> Callable[[Message, Context], Message]:
    """``handler`` as the ClientApp's handler of stage ``name``: run only when the state
    machine allows it, with the round's state; any failure erases the round's secrets and
    becomes this client's error reply. The last stage erases them once it has answered."""

    def run(msg: Message, context: Context) -> Message:
        state = _state(context)
        identity = p.round_identity(msg.metadata.run_id, msg.metadata.group_id)
        try:
            _enter(state, name, identity)
            reply = handler(msg, context, state)
        except Exception as err:  # noqa: BLE001 - any failure must leave no secret behind
            erase(state)
            log(WARNING, "SecAgg+ round %s: %s; its secrets are erased", identity, err)
            return _refusal(msg, str(err) or type(err).__name__)
        if name == p.UNMASK or reply.has_error():
            erase(state)
        return reply

    run.__name__ = run.__qualname__ = name
    return run
