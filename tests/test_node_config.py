"""A SuperNode's ``--node-config``: its partition, its own data file, its device and its mode.
Each fault is one line naming the key; a device sizes the node's job as the simulator sizes a
simulated one; a node's own file is split and read as a partition is, and its classes must be
the run's; what a node says at start is what the server takes or refuses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flwr.app import Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from client.node import describe
from client.node_config import NodeConfigError, NodeSettings, node_job, node_settings
from client.node_records import node_records
from federated.config import parse_run_config
from federated.devices.memory_estimate import estimate_memory
from federated.devices.planner import as_mode
from federated.model.workspace import corpus_for
from federated.protocol import message_keys as keys
from server.node_partitions import NodePartitions
from tests.messages import message

RUN = {"model.name": "tiny-llama", "train.local-steps": 4, "train.batch-size": 4}
CONFIG = parse_run_config(RUN)
PARTITION = {"partition-id": 1, "num-partitions": 3}


def _context(node: dict, run: dict | None = None) -> Context:
    return Context(7, 11, node, RecordDict(), dict(run or RUN))


def _gb(config, batch: int, mode: str = "lora") -> float:
    job = as_mode(config, mode)
    return estimate_memory(job, batch, config.model.max_length, config.lora.rank).total / 1e9


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({**PARTITION, "data_file": "x.jsonl"}, "unknown keys ['data_file']; known: partition-id"),
        ({"partition-id": 0}, "this SuperNode has no partition"),
        ({"partition-id": "one", "num-partitions": 3}, "'partition-id' = 'one': expected an int"),
        ({"partition-id": 3, "num-partitions": 3}, "'partition-id' = 3: outside 0..2"),
        ({**PARTITION, "mode": "full"}, "'mode' = 'full': use lora or zo"),
        ({**PARTITION, "device-profile": "pi3"}, "'device-profile' = 'pi3': not a preset; use "),
        ({**PARTITION, "memory-gb": -1}, "'memory-gb' = -1: expected a number above 0"),
        ({**PARTITION, "data-file": " "}, "'data-file' = ' ': expected a file path"),
    ],
)
def test_a_bad_node_config_is_one_line_naming_the_key(node: dict, expected: str) -> None:
    with pytest.raises(NodeConfigError) as err:
        node_settings(_context(node))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_device_sizes_the_job_as_the_simulator_does() -> None:
    assert node_job(CONFIG, node_settings(_context(PARTITION))).mode == "lora"
    pi = node_job(CONFIG, node_settings(_context({**PARTITION, "device-profile": "pi4"})))
    assert (pi.mode, pi.batch) == ("lora", 4)  # a Pi 4 holds tiny-llama's whole job
    halved = (_gb(CONFIG, 2) + _gb(CONFIG, 4)) / 2
    job = node_job(CONFIG, node_settings(_context({**PARTITION, "memory-gb": halved})))
    assert (job.mode, job.batch) == ("lora", 2)
    inference = (_gb(CONFIG, 1, "zo") + _gb(CONFIG, 1)) / 2  # below LoRA's smallest job
    node = node_settings(_context({**PARTITION, "memory-gb": inference}))
    job = node_job(CONFIG, node)
    assert (job.mode, job.batch) == ("zo", 1) and job.zo_on_factors(CONFIG)
    with pytest.raises(NodeConfigError, match="'device-profile' .*left out: the smallest job"):
        node_job(CONFIG, node_settings(_context({**PARTITION, "memory-gb": 0.01})))
    lora_only = node_settings(_context({**PARTITION, "memory-gb": inference, "mode": "lora"}))
    with pytest.raises(NodeConfigError, match="left out"):
        node_job(CONFIG, lora_only)


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ({"mode": "zo", "strategy.name": "fedkseed"}, "not LoRA steps in a zeroth-order one"),
        ({"train.local-steps": 0, "train.local-epochs": 1.0}, "fixed train.local-steps"),
        ({"dp.mode": "record", "dp.noise-multiplier": 1.0}, "record-level DP does not"),
        ({"secagg.enabled": True}, "SecAgg+ cannot mask"),
    ],
)
def test_a_node_mode_the_run_cannot_take_is_refused(run: dict, expected: str) -> None:
    mode = "lora" if run.get("mode") == "zo" else "zo"
    node = node_settings(_context({**PARTITION, "mode": mode}))
    with pytest.raises(NodeConfigError, match=re.escape(expected)):
        node_job(parse_run_config({**RUN, **run}), node)


def _answer(question: Message, node_id: int, node: dict, message_id: str) -> Message:
    """Node ``node_id``'s reply to ``question``, as its ClientApp makes it."""
    reply = describe(question, _context(node))
    return message(
        reply.content,
        src=node_id,
        message_id=f"r{message_id}",
        reply_to=message_id,
        message_type=MessageType.QUERY,
        run_id=7,
    )


def test_a_node_says_at_start_whether_it_takes_zeroth_order_steps() -> None:
    question = message(
        RecordDict(), dst=11, message_id="q", message_type=MessageType.QUERY, run_id=7
    )
    plain = _answer(question, 11, PARTITION, "q").content.metric_records[keys.METRICS]
    zo = _answer(question, 11, {**PARTITION, "mode": "zo"}, "q").content.metric_records
    assert plain[keys.ZO_ON_FACTORS] == 0 and zo[keys.METRICS][keys.ZO_ON_FACTORS] == 1
    assert zo[keys.METRICS][keys.PARTITION_ID] == 1


class _Grid:
    """Delivers the server's questions to ClientApps of the given node configs, in process."""

    def __init__(self, nodes: dict[int, dict]) -> None:
        self.nodes, self.replies = nodes, {}

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = [f"m{i}" for i in range(len(messages))]
        for message_id, msg in zip(ids, messages, strict=True):
            node = msg.metadata.dst_node_id
            self.replies[message_id] = _answer(msg, node, self.nodes[node], message_id)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        return [self.replies.pop(i) for i in ids if i in self.replies]


def test_the_server_takes_zeroth_order_nodes_where_the_run_allows_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)  # as a ServerApp's runtime sets them
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    nodes = {
        21: {"partition-id": 0, "num-partitions": 2},
        22: {"partition-id": 1, "num-partitions": 2, "mode": "zo"},
    }
    allowed = NodePartitions(100, zo_steps=4)
    assert allowed.learn(_Grid(nodes), nodes, timeout=5) == {}
    assert allowed.of == {21: 0, 22: 1} and allowed.zo_steps == {1: 4}
    forbidden = NodePartitions(100, zo_steps=0, zo_refusal="ffa-lora trains part of the factors")
    refused = forbidden.learn(_Grid(nodes), nodes, timeout=5)
    assert refused == {
        22: "takes zeroth-order steps on the factors: ffa-lora trains part of the factors"
    }
    assert forbidden.of == {21: 0} and forbidden.zo_steps == {}


def _own(path: Path) -> NodeSettings:
    return node_settings(_context({**PARTITION, "data-file": str(path)}))


def test_a_node_trains_and_evaluates_on_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    rows = [{"text": f"question {i}", "target": f"answer {i}"} for i in range(20)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    train, held_out = node_records(CONFIG, _own(path))
    assert len(held_out) == 4 and len(train) == 16  # data.held-out-fraction 0.2
    assert {e.text for e in train + held_out} == {r["text"] for r in rows}
    assert node_records(CONFIG, _own(path)) == (train, held_out)  # the same split every round
    path.write_text("".join(json.dumps(row) + "\n" for row in rows[:10]))
    assert sum(map(len, node_records(CONFIG, _own(path)))) == 10  # an edited file is read anew
    built_in, _ = node_records(CONFIG, node_settings(_context(PARTITION)))
    assert built_in and built_in != train


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "node config 'data-file' = '{path}': No such file or directory"),
        ("not json\n", "{path}, line 1: not valid JSON"),
        ('{"prompt": "a"}\n', "{path}: no column 'text'"),
    ],
)
def test_a_file_the_node_cannot_read_is_one_line_naming_it(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "mine.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as err:
        node_records(CONFIG, _own(path))
    assert expected.format(path=path) in str(err.value) and "\n" not in str(err.value)


def test_a_node_s_classes_are_the_run_s(tmp_path: Path) -> None:
    run = {"model.name": "minilm-l6", "data.name": "wordnet", "data.num-classes": 4}
    config = parse_run_config(run)
    classes = corpus_for(config).label_names
    path = tmp_path / "mine.csv"
    path.write_text("text,label\n" + "".join(f"word {i},{classes[2]}\n" for i in range(5)))
    node = node_settings(_context({**PARTITION, "data-file": str(path)}, run))
    train, held_out = node_records(config, node)
    assert {e.label for e in train + held_out} == {2}  # one class is enough on one node
    path.write_text("text,label\nword,no-such-class\n")
    with pytest.raises(ValueError, match="line 2: label 'no-such-class' is not one of the run's"):
        node_records(config, node)
