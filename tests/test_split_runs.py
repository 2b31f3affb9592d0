"""Whole split runs in process (the real ServerApp and ClientApps, no Ray): the prompt trains
through the exchange and the test loss falls; the saved prompt is a peft prompt-tuning adapter;
a device that vanishes mid-exchange loses its own round only; a server that replays a step
is refused by the device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flwr.app import Message
from peft import PeftModel
from safetensors.torch import load_file

from federated.model.presets import load_base_model
from federated.model.tasks import TASK_CAUSAL_LM
from federated.protocol import split_keys as sk
from federated.split.prompt_model import PROMPT_KEY
from tests.in_process import FIRST_NODE, run_federation

pytestmark = pytest.mark.slow  # whole runs of the apps, in process

SPLIT = {
    "model.name": "tiny-llama",
    "mode": "split",
    "num-server-rounds": 2,
    "train.lr": 0.05,
    "train.local-steps": 3,
    "split.local-steps": 2,
}
# Three nodes of twelve partitions: a few hundred examples each, a short run.
SMALL = {i: {"num-partitions": 12} for i in range(3)}


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def deviated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run in which partition 1's device never gets round 1's second loss message, and in
    round 2 the server sends partition 0's device its first backward message again in place
    of its second."""
    replayed: list[Message] = []

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
    return run_federation(out, "split", SPLIT, 3, tamper=tamper, node_configs=SMALL)


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


def test_the_saved_prompt_is_a_peft_prompt_tuning_adapter(deviated: Path) -> None:
    prompt = load_file(str(deviated / "adapter" / "adapter_model.safetensors"))[PROMPT_KEY]
    checkpoint = load_file(str(deviated / "checkpoint.safetensors"))[PROMPT_KEY]
    torch.testing.assert_close(prompt, checkpoint)
    base = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    model = PeftModel.from_pretrained(base, str(deviated / "adapter"))
    weight = model.prompt_encoder["default"].embedding.weight
    torch.testing.assert_close(weight, prompt)


def test_a_replayed_step_is_refused_by_the_device(deviated: Path) -> None:
    status = {c["partition_id"]: c["status"] for c in _records(deviated)[2]["clients"]}
    assert "split step 0" in status[0] and "at 1" in status[0]
