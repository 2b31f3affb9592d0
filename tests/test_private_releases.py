"""What a record-level DP client releases: on neighbouring data sets, with every secret generator
fixed, its reply and the server's record of it differ only in accounted, noised quantities; its
spending survives a restart; an unreadable ledger stops it; a target below the floor stops the
run at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict

from client import app as client_app
from client import lora_round, zo_round
from federated.config import ConfigError, parse_run_config
from federated.model.presets import load_tokenizer
from federated.model.workspace import client_indices, encode_indices, lora_model
from federated.node_state import STATE_DIR_ENV
from federated.privacy.accounting import PrivacyLedger
from federated.privacy.record_count import count_release, noised_count
from federated.privacy.secret_randomness import INSECURE_SEED_ENV, secret_generator
from federated.protocol import message_keys as keys
from federated.protocol.global_model import GlobalModel, zo_initial_model
from federated.protocol.round_plan import RoundPlan
from federated.protocol.wire import record_to_tensors, serialized_bytes, tensors_to_record
from server.exchange import Exchange
from server.reply_screen import TrainScreen
from strategies.registry import build_strategy
from tests.messages import message

BASE = {
    "model.name": "tiny-bert",
    "data.name": "wordnet",
    "data.num-classes": 3,
    "data.max-per-class": 40,
    "data.partitioner": "iid",
    "lora.rank": 4,
    "lora.dropout": 0.0,
    "train.local-steps": 3,
    "train.batch-size": 8,
    "dp.mode": "record",
    "dp.noise-multiplier": 1.0,
    "dp.record.max-grad-norm": 1.0,
}
ZO = {
    "mode": "zo",
    "strategy.name": "fedkseed",
    "zo.params": "lora",
    "zo.pool-size": 64,
    "zo.lr": 1e-3,
}
NODE = 11


def _message(content: RecordDict) -> Message:
    return message(content, dst=NODE)


def _train_message(config: dict) -> Message:
    round_config = ConfigRecord({keys.SERVER_ROUND: 1})
    if config.get("mode") == "zo":
        arrays = {keys.SEED_SUMS: torch.zeros(config["zo.pool-size"])}
        round_config[keys.SUMS_VERSION], round_config[keys.SUMS_BASE_VERSION] = 0, -1
    else:
        arrays = dict(lora_model(parse_run_config(config)).initial)
        RoundPlan().to_config(round_config)
    return _message(RecordDict({keys.ARRAYS: tensors_to_record(arrays), keys.CONFIG: round_config}))


def _context(config: dict, run_id: int = 5) -> Context:
    node = {"partition-id": 0, "num-partitions": 2}
    return Context(run_id, NODE, node, RecordDict(), dict(config))


def _records(config: dict, extra: int) -> list[dict]:
    parsed = parse_run_config(config)
    tokenizer = load_tokenizer(parsed.model.name)
    encoded = encode_indices(parsed, tokenizer, client_indices(parsed, 0, 2)[0])
    return encoded[: 30 + extra]


def _train_on(config: dict, records: list[dict]) -> Message:
    module = zo_round if config.get("mode") == "zo" else lora_round
    return module.train_on(_train_message(config), _context(config), records)


def _server_record(config: dict, reply: Message) -> dict:
    parsed = parse_run_config(config)
    if parsed.mode == "zo":
        strategy = build_strategy(parsed, zo_initial_model(parsed.zo.pool_size))
    else:
        strategy = build_strategy(parsed, GlobalModel(dict(lora_model(parsed).initial)))
    ex = Exchange([reply], {NODE: 1000}, {NODE: serialized_bytes(reply)})
    screen = TrainScreen(strategy, parsed)
    valid, clients = screen.screen(ex, screen.reply_check(1), server_round=1)
    assert valid == [reply], clients[NODE].status
    return vars(clients[NODE])


# Quantities that come from the client's noised count, its noised update, or the bytes of that
# update: all functions of accounted releases.
NOISED_METRICS = {keys.NUM_EXAMPLES, keys.DP_EPSILON}
NOISED_RECORD = {"num_examples", "epsilon", "bytes_up"}


@pytest.mark.parametrize("mode", ["lora", "zo"])
def test_neighbouring_data_sets_differ_only_in_noised_releases(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {**BASE, **(ZO if mode == "zo" else {})}
    monkeypatch.setenv(INSECURE_SEED_ENV, "7")
    replies = []
    for extra in (0, 1):  # D, and D with one more record
        monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path / f"node-{extra}"))
        replies.append(_train_on(config, _records(config, extra)))
    metrics = [r.content.metric_records[keys.METRICS] for r in replies]
    assert set(metrics[0]) == set(metrics[1])
    assert not set(metrics[0]) & set(keys.UNNOISED_TRAIN_METRICS)
    differing = {k for k in metrics[0] if metrics[0][k] != metrics[1][k]}
    assert differing <= NOISED_METRICS
    # The count went through the Gaussian mechanism (the same secret draw for both), and what
    # depends on it, the epsilon through the sampling rate, only through the noised value.
    count_noise = parse_run_config(config).dp.record.count_noise
    noised = noised_count(30, count_noise, secret_generator("record-count", 0))
    assert metrics[0][keys.NUM_EXAMPLES] == noised != 30
    assert metrics[1][keys.NUM_EXAMPLES] == noised + 1
    for m in metrics:
        ledger = count_release(count_noise)
        ledger.spend(1.0, min(1.0, 8 / m[keys.NUM_EXAMPLES]), 3)
        assert m[keys.DP_EPSILON] == pytest.approx(ledger.epsilon(1e-5))
    records = [_server_record(config, reply) for reply in replies]
    assert {k for k in records[0] if records[0][k] != records[1][k]} <= NOISED_RECORD
    assert records[0]["train_loss"] is None and records[0]["train_seconds"] is None


def test_the_update_is_a_noised_release_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the noise secret again, the same data set gives a different update each time."""
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    records = _records(BASE, 0)
    first, second = (
        record_to_tensors(_train_on(BASE, records).content.array_records[keys.ARRAYS])
        for _ in range(2)
    )
    assert any(not torch.equal(first[k], second[k]) for k in first)


def _spent(reply: Message) -> float:
    return float(reply.content.metric_records[keys.METRICS][keys.DP_EPSILON])


def test_a_restarted_client_keeps_its_spent_epsilon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    context = _context(BASE)
    first = client_app.train(_train_message(BASE), context)
    restarted = _context(BASE)  # a new SuperNode process: Flower's node state is empty
    second = client_app.train(_train_message(BASE), restarted)
    count = int(first.content.metric_records[keys.METRICS][keys.NUM_EXAMPLES])
    assert int(second.content.metric_records[keys.METRICS][keys.NUM_EXAMPLES]) == count
    rate, steps = min(1.0, BASE["train.batch-size"] / count), BASE["train.local-steps"]
    reference = PrivacyLedger()
    reference.spend(parse_run_config(BASE).dp.record.count_noise, 1.0, 1)
    reference.spend(1.0, rate, steps)
    assert _spent(first) == pytest.approx(reference.epsilon(1e-5))
    reference.spend(1.0, rate, steps)
    assert _spent(second) == pytest.approx(reference.epsilon(1e-5))
    assert _spent(second) > _spent(first)


def test_a_client_whose_ledger_cannot_be_read_does_not_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    client_app.train(_train_message(BASE), _context(BASE))
    (ledger,) = (tmp_path / "privacy" / "ledgers").glob("partition-*.json")
    ledger.write_text(ledger.read_text()[:-7])  # a torn write, a bad disk
    with pytest.raises(RuntimeError, match="cannot read this node's privacy ledger"):
        client_app.train(_train_message(BASE), _context(BASE))
    ledger.unlink()
    ledger.mkdir()  # unreadable as a file
    with pytest.raises(RuntimeError, match="cannot read this node's privacy ledger"):
        client_app.train(_train_message(BASE), _context(BASE))


def test_a_private_client_releases_no_held_out_metrics(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    message = _train_message(BASE)
    with pytest.raises(PermissionError, match="releases no held-out metrics"):
        client_app.evaluate(message, _context(BASE))


def test_a_target_below_the_count_release_is_refused_at_start_in_one_line() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_run_config({**BASE, "dp.noise-multiplier": 0.0, "dp.target-epsilon": 0.15})
    line = str(refused.value)
    assert "\n" not in line and line.startswith("run config 'dp.target-epsilon' = 0.15")
    assert "noised record count" in line
    assert parse_run_config({**BASE, "dp.noise-multiplier": 0.0, "dp.target-epsilon": 0.5})
