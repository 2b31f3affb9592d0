"""A whole split run in process (the real ServerApp and ClientApps, no Ray) on the device
simulator: the planner gives each device the deepest cut that fits its memory and device and
server both work at that cut; the simulated clock counts the exchange's round trips; the prompt
trains and the test loss falls; the saved prompt is a peft prompt-tuning adapter; a device that
vanishes mid-exchange loses its own round only; a device that keeps sending activations past
its planned steps is dropped; a server that replays a step is refused by the device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flwr.app import Message
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from federated.config import parse_run_config
from federated.devices.split_estimate import estimate_split_memory
from federated.model.numerics import PLAIN_FP32
from federated.protocol import split_keys as sk
from federated.split.prompt_model import PROMPT_KEY
from tests.in_process import FIRST_NODE, run_federation
from tests.model_folders import llama_folder
from tests.profile_files import write_profiles

pytestmark = pytest.mark.slow  # whole runs of the apps, in process

BLOCKS, CUT = 4, 3
SPLIT = {
    "mode": "split",
    "num-server-rounds": 2,
    "train.lr": 0.05,
    "train.local-steps": 3,
    "train.batch-size": 4,
    "split.local-steps": 2,
    "split.cut-layer": CUT,
    "simulation.population": "roomy:0.5,cramped:0.5",
    "strategy.min-train-nodes": 1,
}
# Three nodes of twelve partitions: a few hundred examples each, a short run.
SMALL = {i: {"num-partitions": 12} for i in range(3)}


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def four_blocks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Llama with four blocks, saved as a model folder with its tokenizer."""
    return llama_folder(
        tmp_path_factory.mktemp("model"), blocks=BLOCKS, hidden=64, intermediate=128
    )


def _profiles(path: Path, model: Path) -> Path:
    """One device with room for the deepest cut, one with room for a single block."""
    config = parse_run_config({"model.name": str(model), "mode": "split"})

    def need(cut: int) -> float:
        job = parse_run_config({"model.name": str(model), "mode": "split", "split.cut-layer": cut})
        return estimate_split_memory(job, 4, config.model.max_length, PLAIN_FP32).total

    rows = {"roomy": need(CUT) + 1e6, "cramped": (need(1) + need(2)) / 2}
    return write_profiles(path, {n: b / 1e9 for n, b in rows.items()}, latency_ms=40)


@pytest.fixture(scope="module")
def deviated(tmp_path_factory: pytest.TempPathFactory, four_blocks: Path) -> Path:
    """A run in which partition 1's device never gets round 1's second loss message, and in
    round 2 the server sends partition 0's device its first backward message again in place
    of its second."""
    replayed: list[Message] = []
    backward_replies: list[Message] = []

    def tamper_reply(reply: Message) -> Message:
        # Partition 2's device answers its last backward of round 2 (its sixth) with activations
        # again, as if it had more steps to take.
        meta = reply.metadata
        if meta.message_type != f"train.{sk.BACKWARD}" or meta.src_node_id != FIRST_NODE + 2:
            return reply
        backward_replies.append(reply)
        if len(backward_replies) == 6:
            reply.content = backward_replies[4].content
        return reply

    def tamper(msg: Message) -> Message | None:
        meta, config = msg.metadata, msg.content.config_records.get("config")
        if config is None:  # the server's question which partition a node holds
            return msg
        at = (meta.message_type.removeprefix("train."), int(config["server-round"]))
        step, node = int(config.get(sk.STEP, -1)), meta.dst_node_id
        if at == (sk.LOSS, 1) and node == FIRST_NODE + 1 and step == 1:
            return None
        if at == (sk.BACKWARD, 2) and node == FIRST_NODE:
            if step == 0:
                replayed.append(msg)
            elif step == 1:
                msg.content = replayed[0].content
        return msg

    out = tmp_path_factory.mktemp("split")
    config = {
        **SPLIT,
        "model.name": str(four_blocks),
        "simulation.profiles-file": str(_profiles(out / "devices.toml", four_blocks)),
    }
    return run_federation(
        out, "split", config, 3, tamper=tamper, tamper_reply=tamper_reply, node_configs=SMALL
    )


def test_the_prompt_trains_through_the_exchange(deviated: Path) -> None:
    records = _records(deviated)
    assert max(r["test_loss"] for r in records[1:]) < records[0]["test_loss"]
    for record in records[1:]:
        for client in record["clients"]:
            # Each step crossed the cut both ways: far more than the prompt itself.
            assert client["status"] != "ok" or client["bytes_up"] > 10 * 8 * 64 * 4


def test_a_device_that_vanishes_mid_exchange_loses_its_own_round_only(deviated: Path) -> None:
    first, second = _records(deviated)[1:]
    status = {c["partition_id"]: c["status"] for c in first["clients"]}
    assert status[0] == status[2] == "ok"
    assert "out of the split exchange at step 1" in status[1] and first["clients_accepted"] == 2
    # The next round starts it afresh.
    assert {c["partition_id"]: c["status"] for c in second["clients"]}[1] == "ok"


def test_the_saved_prompt_is_a_peft_prompt_tuning_adapter(
    deviated: Path, four_blocks: Path
) -> None:
    prompt = load_file(str(deviated / "adapter" / "adapter_model.safetensors"))[PROMPT_KEY]
    checkpoint = load_file(str(deviated / "checkpoint.safetensors"))[PROMPT_KEY]
    torch.testing.assert_close(prompt, checkpoint)
    base = AutoModelForCausalLM.from_pretrained(four_blocks)
    model = PeftModel.from_pretrained(base, str(deviated / "adapter"))
    weight = model.prompt_encoder["default"].embedding.weight
    torch.testing.assert_close(weight, prompt)


def test_a_replayed_step_is_refused_by_the_device(deviated: Path) -> None:
    status = {c["partition_id"]: c["status"] for c in _records(deviated)[2]["clients"]}
    assert "split step 0" in status[0] and "at 1" in status[0]


def test_each_device_trains_at_the_cut_that_fits_it(deviated: Path) -> None:
    summary = json.loads((deviated / "summary.json").read_text())
    assert {name: p["cut_layer"] for name, p in summary["devices"].items()} == {
        "roomy": CUT,
        "cramped": 1,
    }
    for record in _records(deviated)[1:]:
        for device in record["simulation"]["devices"]:
            assert device["mode"] == "split" and device["status"] == "kept"
            # Two round trips a split step (3 steps) and two more, 40 ms each way.
            assert device["download_s"] >= 8 * 0.04 and device["upload_s"] >= 8 * 0.04


def test_a_device_that_keeps_stepping_is_dropped_at_its_planned_steps(deviated: Path) -> None:
    status = {c["partition_id"]: c["status"] for c in _records(deviated)[2]["clients"]}
    assert "more than its 3 steps" in status[2], status
    assert status[1] == "ok"
