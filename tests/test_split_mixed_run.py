"""A mixed federation in process (the real ServerApp and ClientApps, no Ray): in one LoRA run a
device with room trains LoRA, one with inference memory only takes zeroth-order steps, and one
that cannot run the model forward trains the factors of its first blocks by split learning,
the server those of the rest; all three replies train one adapter and the test loss falls. The
split device sends only its own blocks' factors; body factors it sends are replaced by the
server's; it is not asked to evaluate; the clock counts its exchange."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from flwr.app import Message
from safetensors.torch import load_file

from federated.config import parse_run_config
from federated.devices.memory_estimate import estimate_memory
from federated.devices.planner import as_mode
from federated.devices.split_estimate import estimate_split_memory
from federated.model.numerics import PLAIN_FP32
from federated.protocol import message_keys as keys
from federated.protocol.wire import record_to_tensors, tensors_to_record
from federated.split.parts import block_of
from tests.in_process import FIRST_NODE, run_federation
from tests.model_folders import llama_folder
from tests.profile_files import write_profiles

pytestmark = pytest.mark.slow  # a whole run of the apps, in process

CUT, LENGTH = 2, 64
RUN = {
    "num-server-rounds": 1,
    "model.max-length": LENGTH,
    "train.lr": 0.01,
    "train.local-steps": 3,
    "train.batch-size": 2,
    "strategy.min-train-nodes": 3,
    "strategy.min-available-nodes": 3,
    "split.cut-layer": CUT,
    "split.local-steps": 1,
    "simulation.split-fallback": True,
}
SPLIT_PARTITION = 2
# Three nodes of twelve partitions: a hundred examples or so each, a short run.
PARTITIONS = 12


@pytest.fixture(scope="module")
def six_blocks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Llama whose blocks weigh enough that holding two of six saves what
    zeroth-order inference on all six needs."""
    return llama_folder(tmp_path_factory.mktemp("model"), blocks=6, hidden=256, intermediate=1024)


def _devices(folder: Path, model: Path) -> dict[str, str]:
    """Three profiles between the planner's thresholds: LoRA, zeroth-order only, split only;
    partition p gets the (p mod 3)-th."""
    config = parse_run_config({**RUN, "model.name": str(model), "simulation.population": "x:1"})
    lora = estimate_memory(config, 1, LENGTH, config.lora.rank).total
    zo = estimate_memory(as_mode(config, "zo"), 1, LENGTH, config.lora.rank).total
    split = estimate_split_memory(
        replace(config, split=replace(config.split, cut_layer=CUT)), 1, LENGTH, PLAIN_FP32
    ).total
    assert split < zo < lora
    memory = {"roomy": lora * 1.2, "middle": (lora + zo) / 2, "cramped": (zo + split) / 2}
    profiles = write_profiles(folder / "devices.toml", {n: b / 1e9 for n, b in memory.items()})
    names = list(memory)
    rows = "".join(f"{p},{names[p % 3]}\n" for p in range(PARTITIONS))
    (folder / "devices.csv").write_text(rows)
    return {
        "simulation.profiles-file": str(profiles),
        "simulation.population": str(folder / "devices.csv"),
    }


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, six_blocks: Path) -> tuple[Path, list]:
    """The run, and the split device's reply as it sent it; the device then adds a poisoned
    copy of every body factor to its reply."""
    sent: list[dict[str, torch.Tensor]] = []

    def tamper_reply(reply: Message) -> Message:
        meta = reply.metadata
        if meta.message_type != "train" or meta.src_node_id != FIRST_NODE + SPLIT_PARTITION:
            return reply
        tensors = record_to_tensors(reply.content.array_records[keys.ARRAYS])
        sent.append(dict(tensors))
        if len(sent) == 1:
            for key in [k for k in tensors if ".layers.0." in k]:
                body_key = key.replace(".layers.0.", f".layers.{CUT}.")
                tensors[body_key] = torch.full_like(tensors[key], 1e6)
            reply.content[keys.ARRAYS] = tensors_to_record(tensors)
        return reply

    out = tmp_path_factory.mktemp("mixed")
    config = {**RUN, "model.name": str(six_blocks), **_devices(out, six_blocks)}
    nodes = {p: {"num-partitions": PARTITIONS} for p in range(3)}
    folder = run_federation(out, "mixed", config, 3, tamper_reply=tamper_reply, node_configs=nodes)
    return folder, sent


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_lora_zeroth_order_and_split_devices_train_one_adapter(mixed: tuple[Path, list]) -> None:
    folder, _ = mixed
    summary = json.loads((folder / "summary.json").read_text())
    plans = {name: (p["mode"], p.get("cut_layer")) for name, p in summary["devices"].items()}
    assert plans == {"roomy": ("lora", None), "middle": ("zo", None), "cramped": ("split", CUT)}
    records = _records(folder)
    for record in records[1:]:
        assert {c["partition_id"]: c["status"] for c in record["clients"]} == {
            0: "ok",
            1: "ok",
            2: "ok",
        }
    assert records[-1]["test_loss"] < records[0]["test_loss"]


def test_the_split_device_sends_its_own_blocks_and_the_server_the_body(
    mixed: tuple[Path, list],
) -> None:
    folder, sent = mixed
    assert len(sent) == 1
    assert sent[0] and all(block_of(k) < CUT for k in sent[0])
    # The poisoned body factors never reach the model: the server's own replace them.
    adapter = load_file(str(folder / "checkpoint.safetensors"))
    assert any(block_of(k) >= CUT for k in adapter)
    assert max(float(t.abs().max()) for t in adapter.values()) < 100


def test_the_split_device_is_not_asked_to_evaluate_and_its_exchange_is_timed(
    mixed: tuple[Path, list],
) -> None:
    folder, _ = mixed
    for record in _records(folder)[1:]:
        evaluated = {c["partition_id"] for c in record["clients"] if c.get("eval_status")}
        assert SPLIT_PARTITION not in evaluated
        devices = {d["partition_id"]: d for d in record["simulation"]["devices"]}
        assert devices[SPLIT_PARTITION]["mode"] == "split"
        # Two round trips a split step (3 steps) and two more, 20 ms each way.
        assert devices[SPLIT_PARTITION]["download_s"] >= 8 * 0.02
