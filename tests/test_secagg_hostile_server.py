"""SecAgg+ against a server that deviates, on the real client handlers and the real server round
in process: a replayed, skipped or out-of-order stage, a threshold or group below the client's
own minimum, and two clients told different survivor sets are each refused, and the round's
secrets are gone; an honest round still gives the plain FedAvg model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.clientapp import ClientApp

from client.app import register
from federated.config import parse_run_config
from federated.model.workspace import lora_model
from federated.protocol import message_keys as keys
from federated.protocol.global_model import GlobalModel
from federated.secagg import protocol as p
from federated.secagg.keys import new_key_pair, new_signing_pair, threshold
from server.secure_round import SecureOutcome, secure_train_round
from strategies.node_pool import NodePool
from strategies.registry import build_strategy
from tests.in_process import InProcessGrid, server_identity

RUN = {
    "model.name": "tiny-llama",
    "lora.rank": 2,
    "lora.dropout": 0.0,
    "train.lr": 0.02,
    "train.local-steps": 1,
    "strategy.fraction-evaluate": 0.0,
    "secagg.enabled": True,
}
NODES = [101, 102, 103, 104, 105]
SECRETS = {p.SK_MASK, p.SK_ENCRYPT, p.SK_SIGN, p.SEED, p.SEED_SHARES, p.KEY_SHARES}


def _quiet(stage: str) -> Callable[[int, int], None]:
    return lambda done, total: None


class Federation:
    """Five nodes of a SecAgg+ LoRA run and the server's strategy, all in this process."""

    def __init__(self, run: dict | None = None) -> None:
        self.run = {**RUN, **(run or {})}
        self.config = parse_run_config(self.run)
        nodes = {n: {"partition-id": i, "num-partitions": len(NODES)} for i, n in enumerate(NODES)}
        self.grid = InProcessGrid(register(ClientApp()), nodes, self.run)
        initial = GlobalModel(dict(lora_model(self.config).initial))
        self.strategy = build_strategy(self.config, initial)
        self.pool = NodePool({n: i for i, n in enumerate(NODES)})
        self.shared = ConfigRecord({keys.RUN_KEY: "ab" * 8})

    def round(self, round_try: tuple[int, int] = (1, 1)) -> SecureOutcome:
        with server_identity():
            sent = self.strategy.training_messages(round_try[0], self.grid, self.pool, self.shared)
            return secure_train_round(
                self.grid, sent, self.strategy, self.config, round_try, _quiet
            )

    def replay(self, msg: Message) -> Message:
        """``msg`` delivered once more, as a server that replays it would."""
        return self.grid.answer(msg)

    def sent(self, stage: str, node: int) -> Message:
        """The server's message of ``stage`` to ``node``, delivered or held back."""
        return next(
            m
            for m in self.grid.delivered + self.grid.held
            if m.metadata.message_type == f"train.{stage}" and m.metadata.dst_node_id == node
        )

    def ask(self, stage: str, node: int, values: dict, group_id: str = "1.1") -> Message:
        """``node``'s answer to a message of ``stage`` that the server makes up."""
        content = RecordDict({p.CONFIG: ConfigRecord(values)})
        with server_identity():
            msg = Message(
                content, dst_node_id=node, message_type=f"train.{stage}", group_id=group_id
            )
        return self.grid.answer(self.grid.arrived(msg, f"{stage}-{node}"))

    def reply(self, stage: str, node: int) -> Message:
        """What ``node`` answered to its message of ``stage``."""
        return self.grid.answers[self.sent(stage, node).metadata.message_id]

    def secrets_left(self, node: int) -> set[str]:
        record = self.grid.contexts[node].state.config_records.get(p.STATE, ConfigRecord())
        return SECRETS & set(record)


def _refused(reply: Message, why: str) -> None:
    assert reply.has_error(), "the client answered a stage it must refuse"
    assert "SecAgg+ refused" in reply.error.reason and why in reply.error.reason


def _until(fed: Federation, last: str) -> None:
    """Run an honest round, but stop delivering after stage ``last``: later stages never
    arrive, so the clients hold the round's secrets as they were after ``last``."""
    later = p.STAGES[p.STAGES.index(last) + 1 :]

    before = fed.grid.tamper

    def cut(msg: Message) -> Message | None:
        if msg.metadata.message_type.removeprefix("train.") in later:
            return None
        return before(msg) if before else msg

    fed.grid.tamper = cut
    fed.round()
    fed.grid.tamper = None


def test_an_honest_round_gives_the_plain_mean_and_erases_every_secret() -> None:
    fed = Federation()
    start = {k: v.clone() for k, v in fed.strategy.model.trainable.items()}
    outcome = fed.round()
    assert outcome.failure is None and not outcome.rejected
    plain = Federation({"secagg.enabled": False})
    with server_identity():
        replies = [
            plain.grid.answer(plain.grid.arrived(m, f"p{i}"))
            for i, m in enumerate(
                plain.strategy.training_messages(1, plain.grid, plain.pool, plain.shared)
            )
        ]
    uploads = [r.content.array_records[keys.ARRAYS].to_torch_state_dict() for r in replies]
    weights = [r.content.metric_records[keys.METRICS][keys.NUM_EXAMPLES] for r in replies]
    for key, value in fed.strategy.model.trainable.items():
        if key not in uploads[0]:
            continue
        mean = sum(w * u[key].double() for w, u in zip(weights, uploads, strict=True)) / sum(
            weights
        )
        assert float((value.double() - mean).abs().max()) < 1e-4
        assert key not in start or not torch.equal(value, start[key]) or not mean.any()
    assert all(not fed.secrets_left(n) for n in NODES)


def test_a_replayed_unmask_is_refused() -> None:
    fed = Federation()
    assert fed.round().failure is None
    _refused(fed.replay(fed.sent(p.UNMASK, NODES[0])), "no round is under way")


def test_a_replayed_collect_is_refused_and_the_round_secrets_are_gone() -> None:
    fed = Federation()
    _until(fed, p.COLLECT)
    target = NODES[1]
    assert fed.secrets_left(target) == SECRETS
    _refused(fed.replay(fed.sent(p.COLLECT, target)), "the next stage is secagg_consistency")
    assert not fed.secrets_left(target)
    # Nothing of the round can be asked of it any more.
    _refused(fed.ask(p.CONSISTENCY, target, {p.SURVIVORS: NODES}), "no round is under way")


def test_replayed_setup_and_share_keys_are_refused() -> None:
    fed = Federation()
    _until(fed, p.SHARE_KEYS)
    _refused(fed.replay(fed.sent(p.SHARE_KEYS, NODES[2])), "the next stage is secagg_collect")
    assert not fed.secrets_left(NODES[2])
    _refused(fed.replay(fed.sent(p.SETUP, NODES[3])), "already started")
    assert not fed.secrets_left(NODES[3])


def test_a_skipped_stage_is_refused() -> None:
    fed = Federation()
    _until(fed, p.COLLECT)
    # Unmask straight after collect, skipping the survivors' signatures.
    skip = fed.ask(p.UNMASK, NODES[0], {p.SIGNERS: [], p.SIGNATURES: []})
    _refused(skip, "the next stage is secagg_consistency")
    assert not fed.secrets_left(NODES[0])


def test_a_stage_of_another_round_is_refused() -> None:
    fed = Federation()
    _until(fed, p.SHARE_KEYS)
    collect = fed.sent(p.COLLECT, NODES[0])
    collect.metadata.__dict__["_group_id"] = "9.1"
    _refused(fed.replay(collect), "this node is in round")


def test_a_retried_round_starts_afresh() -> None:
    fed = Federation()
    _until(fed, p.COLLECT)  # the first try never unmasks
    assert fed.round((1, 2)).failure is None


def _on_share_keys(fed: Federation, change: Callable[[ConfigRecord], None]) -> None:
    def tamper(msg: Message) -> Message:
        if msg.metadata.message_type == f"train.{p.SHARE_KEYS}":
            change(msg.content.config_records[p.CONFIG])
        return msg

    fed.grid.tamper = tamper


def test_a_threshold_below_the_clients_own_is_refused() -> None:
    fed = Federation()
    _on_share_keys(fed, lambda config: config.__setitem__(p.THRESHOLD, 1))
    assert fed.round().failure is not None
    own = threshold(len(NODES), fed.config.secagg.reconstruction_threshold)
    for node in NODES:
        _refused(fed.reply(p.SHARE_KEYS, node), f"asks for {own} to {len(NODES)}")
        assert not fed.secrets_left(node)


def _keys_for(fed: Federation, group: list[int]) -> dict:
    """A share-keys record for ``group`` with made-up keys."""
    pk = {n: (new_key_pair()[1], new_key_pair()[1], new_signing_pair()[1]) for n in group}
    return {
        p.NODES: group,
        p.PK_MASKS: [pk[n][0] for n in group],
        p.PK_ENCRYPTS: [pk[n][1] for n in group],
        p.PK_SIGNS: [pk[n][2] for n in group],
        p.THRESHOLD: threshold(len(group), fed.config.secagg.reconstruction_threshold),
    }


def test_a_group_below_the_clients_smallest_is_refused() -> None:
    fed = Federation({"secagg.min-group-size": 4})
    assert not fed.ask(p.SETUP, NODES[0], {}).has_error()
    reply = fed.ask(p.SHARE_KEYS, NODES[0], _keys_for(fed, NODES[:3]))
    _refused(reply, "joins groups of at least 4 (secagg.min-group-size)")
    assert not fed.secrets_left(NODES[0])


def _tell(fed: Federation, nodes: set[int], survivors: Callable[[list[int]], list[int]]) -> None:
    """The server announces a different survivor set to ``nodes``."""

    def story(msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        if msg.metadata.message_type == f"train.{p.CONSISTENCY}" and node in nodes:
            config = msg.content.config_records[p.CONFIG]
            config[p.SURVIVORS] = survivors([int(n) for n in config[p.SURVIVORS]])
        return msg

    fed.grid.tamper = story


def test_clients_told_different_survivors_give_no_shares() -> None:
    """The attack on a client X: tell some clients X survived (they would give shares of X's
    mask seed) and others that X dropped (shares of X's mask key). The survivor sets they sign
    differ, so neither side finds the threshold of its group behind its set: nobody unmasks."""
    fed = Federation()
    x = NODES[0]
    _tell(fed, set(NODES[3:]), lambda survivors: [n for n in survivors if n != x])
    outcome = fed.round()
    assert outcome.failure is not None and "too few shares" in outcome.failure
    t = threshold(len(NODES), fed.config.secagg.reconstruction_threshold)
    for node in NODES[:3]:  # the honest server code left out the signatures that did not verify
        why = f"3 of this node's group signed the survivors; it needs {t}"
        _refused(fed.reply(p.UNMASK, node), why)
        assert not fed.secrets_left(node)
    # Told X dropped, 104 refuses too, whatever the server forwards: the others signed X in.
    signatures = {n: fed.reply(p.CONSISTENCY, n).content.config_records[p.CONFIG] for n in NODES}
    values = {p.SIGNERS: NODES, p.SIGNATURES: [signatures[n][p.SIGNATURE] for n in NODES]}
    _refused(fed.ask(p.UNMASK, NODES[3], values), "signature is not on the survivor set")
    assert not fed.secrets_left(NODES[3])


def test_a_forwarded_signature_on_another_survivor_set_is_refused() -> None:
    """A server that forwards everything it has, the other story's signature included."""
    fed = Federation()
    x, liar = NODES[0], NODES[4]
    _tell(fed, {liar}, lambda survivors: [n for n in survivors if n != x])
    _until(fed, p.CONSISTENCY)
    signatures = {
        n: fed.reply(p.CONSISTENCY, n).content.config_records[p.CONFIG][p.SIGNATURE] for n in NODES
    }
    values = {p.SIGNERS: NODES, p.SIGNATURES: [signatures[n] for n in NODES]}
    _refused(
        fed.ask(p.UNMASK, x, values),
        f"node {liar}'s signature is not on the survivor set this node signed",
    )
    assert not fed.secrets_left(x)


@pytest.mark.parametrize("stage", [p.SHARE_KEYS, p.COLLECT, p.CONSISTENCY, p.UNMASK])
def test_a_stage_before_setup_is_refused(stage: str) -> None:
    _refused(Federation().ask(stage, NODES[0], {}), "no round is under way")
