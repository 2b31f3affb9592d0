"""A mixed federation's zeroth-order reply on the server: the real client's (seed, scalar)
pairs become exactly the factors that client ended at, and the screen refuses pairs from a
device planned on LoRA, factors from a device planned on zeroth-order, and pairs that move
the factors further than server.max-update-norm."""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

from client import lora_round
from federated.config import parse_run_config
from federated.model.lora import trainable_state
from federated.model.workspace import client_indices, encode_indices, lora_model
from federated.protocol import message_keys as keys
from federated.protocol.global_model import GlobalModel
from federated.protocol.round_plan import RoundPlan
from federated.protocol.wire import record_to_tensors, serialized_bytes, tensors_to_record
from server.exchange import Exchange
from server.reply_screen import TrainScreen
from server.zo_factor_replies import zo_fallback_problem
from strategies.registry import STRATEGIES, build_strategy
from tests.messages import message

RUN = {
    "model.name": "tiny-bert",
    "data.name": "wordnet",
    "data.num-classes": 3,
    "data.max-per-class": 40,
    "data.partitioner": "iid",
    "lora.rank": 4,
    "lora.dropout": 0.0,
    "train.local-steps": 5,
    "train.batch-size": 4,
    "zo.lr": 0.05,
    "zo.eps": 1e-2,
    "zo.pool-size": 64,
}
NODE, PARTITION = 11, 0


def _train_message(config: dict, factors: dict, mode: str) -> Message:
    round_config = RoundPlan().to_config(ConfigRecord({keys.SERVER_ROUND: 1}))
    if mode == "zo":
        round_config[keys.PLANNED_MODE] = "zo"
    content = RecordDict({keys.ARRAYS: tensors_to_record(factors), keys.CONFIG: round_config})
    return message(content, dst=NODE)


def _client_round(config: dict, mode: str) -> tuple[Message, dict, dict]:
    """A real client's reply to a round that sends seeded random factors, what it was sent,
    and the factors the client ended at."""
    parsed = parse_run_config(config)
    local = lora_model(parsed)
    generator = torch.Generator().manual_seed(0)
    sent = {k: 0.1 * torch.randn(v.shape, generator=generator) for k, v in local.initial.items()}
    context = Context(
        5, NODE, {"partition-id": PARTITION, "num-partitions": 2}, RecordDict(), dict(config)
    )
    records = encode_indices(parsed, local.tokenizer, client_indices(parsed, PARTITION, 2)[0])
    reply = lora_round.train_on(_train_message(config, sent, mode), context, records)
    return reply, sent, trainable_state(local.model)


def _screen(config: dict, sent: dict, reply: Message, zo_partitions: set[int]) -> str:
    parsed = parse_run_config(config)
    strategy = build_strategy(parsed, GlobalModel(sent))
    zo_steps = {p: parsed.train.local_steps for p in zo_partitions}
    screen = TrainScreen(strategy, parsed, partition_of={NODE: PARTITION}, zo_steps=zo_steps)
    ex = Exchange([reply], {NODE: 1000}, {NODE: serialized_bytes(reply)})
    valid, clients = screen.screen(ex, screen.reply_check(1), server_round=1)
    assert valid == ([reply] if clients[NODE].status == "ok" else [])
    return clients[NODE].status


def test_the_server_turns_the_clients_pairs_into_the_factors_it_ended_at() -> None:
    reply, sent, ended = _client_round(RUN, "zo")
    assert set(reply.content.array_records[keys.ARRAYS]) == {keys.SEED_INDICES, keys.SEED_SCALARS}
    assert serialized_bytes(reply) < 3_000
    assert _screen(RUN, sent, reply, {PARTITION}) == "ok"
    factors = record_to_tensors(reply.content.array_records[keys.ARRAYS])
    assert factors.keys() == ended.keys()
    assert max(float((ended[k] - sent[k]).abs().max()) for k in sent) > 1e-3
    for key, value in ended.items():
        torch.testing.assert_close(factors[key], value, rtol=1e-5, atol=1e-6)
    metrics = reply.content.metric_records[keys.METRICS]
    assert metrics[keys.LORA_RANK] == 4 and metrics[keys.TRAIN_STEPS] == 5


def test_pairs_from_a_device_planned_on_lora_are_refused() -> None:
    reply, sent, _ = _client_round(RUN, "zo")
    assert _screen(RUN, sent, reply, set()) == "rejected: metric keys differ: missing ['lora-rank']"


def test_factors_from_a_device_planned_on_zeroth_order_are_refused() -> None:
    reply, sent, _ = _client_round(RUN, "lora")
    assert _screen(RUN, sent, reply, {PARTITION}) == (
        "rejected: metric keys differ: unexpected ['lora-rank']"
    )


def test_pairs_that_move_the_factors_too_far_are_refused() -> None:
    tight = {**RUN, "server.max-update-norm": 1e-3}
    reply, sent, _ = _client_round(tight, "zo")
    assert "server.max-update-norm" in _screen(tight, sent, reply, {PARTITION})


def test_the_strategies_that_take_zeroth_order_devices() -> None:
    config = parse_run_config(RUN)
    initial = GlobalModel(dict(lora_model(config).initial))
    takes = set()
    for name, cls in STRATEGIES.items():
        if cls.reply_kind != "tensors":
            continue
        strategy = build_strategy(parse_run_config({**RUN, "strategy.name": name}), initial)
        if zo_fallback_problem(strategy) is None:
            takes.add(name)
    assert takes == {"fedavg", "fedex-lora", "flexlora", "lora-fair", "hetlora"}
