"""Whole SecAgg+ runs in process (the real ServerApp and ClientApps, no Ray): dropouts after
sharing leave the sum of the others, FedKSeed's seed sums add up, client-level noise reaches
the securely summed update, and a distributed DP round short of its planned clients is never
unmasked."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from flwr.app import Message
from safetensors.torch import load_file

from federated.protocol import message_keys as keys
from federated.secagg import protocol as p
from tests.in_process import FIRST_NODE, run_federation

pytestmark = pytest.mark.slow  # whole runs of the apps, in process

# One round: training is deterministic, so two runs differ only in aggregation.
LORA = {
    "model.name": "tiny-llama",
    "num-server-rounds": 1,
    "lora.rank": 4,
    "lora.dropout": 0.0,
    "train.lr": 0.02,
    "train.local-steps": 4,
    "strategy.fraction-evaluate": 0.0,
}
TOLERANCE = 1e-4  # a few quantization steps (2 · 8 / 2^22 each) over the clients' weights


def adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next((folder / "adapter").glob("*.safetensors"))))


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=TOLERANCE)


def _lost(stage: str, partitions: set[int]) -> Callable[[Message], Message | None]:
    """Messages of ``stage`` ('train' or a SecAgg+ stage) never reach these partitions."""
    nodes = {FIRST_NODE + partition for partition in partitions}

    def tamper(msg: Message) -> Message | None:
        lost = msg.metadata.message_type == stage and msg.metadata.dst_node_id in nodes
        return None if lost else msg

    return tamper


def test_dropouts_after_sharing_leave_the_sum_of_the_others(tmp_path: Path) -> None:
    # Plain: partitions 0 and 1 send nothing. Secure: they drop out after sharing their
    # secrets. Either way the model is the mean of partitions 2, 3 and 4.
    plain = run_federation(tmp_path, "plain", LORA, 5, tamper=_lost("train", {0, 1}))
    secure = {**LORA, "secagg.enabled": True, "secagg.reconstruction-threshold": 0.5}
    dropped = _lost(f"train.{p.COLLECT}", {0, 1})
    folder = run_federation(tmp_path, "secure", secure, 5, tamper=dropped)
    assert_close(adapter(folder), adapter(plain))
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rounds[1]["clients_accepted"] == 3


def test_fedkseed_seed_sums_add_up_under_secagg(tmp_path: Path) -> None:
    zo = {
        **LORA,
        "mode": "zo",
        "strategy.name": "fedkseed",
        "zo.pool-size": 256,
        "zo.params": "full",
        "zo.perturbation": "low-rank",
        "zo.lr": 2e-3,
        "train.local-steps": 10,
    }
    wide = {"secagg.enabled": True, "secagg.clipping-range": 1000.0, "secagg.quantization-bits": 26}
    sums = [
        load_file(str(run_federation(tmp_path, name, config) / "zo_sums.safetensors"))[
            keys.SEED_SUMS
        ]
        for name, config in (("zo-plain", zo), ("zo-secure", {**zo, **wide}))
    ]
    assert int((sums[0] != 0).sum()) > 0
    torch.testing.assert_close(sums[1], sums[0], rtol=0, atol=1e-3)


def test_client_level_noise_reaches_the_securely_summed_update(tmp_path: Path) -> None:
    clip, sigma, clients = 0.01, 1.0, 4
    private = {**LORA, "secagg.enabled": True, "dp.mode": "client", "dp.client.clip-norm": clip}
    quiet_run = {**private, "dp.noise-multiplier": 1e-9}
    quiet = adapter(run_federation(tmp_path, "quiet", quiet_run))
    noisy_run = {**private, "dp.noise-multiplier": sigma}
    noisy = adapter(run_federation(tmp_path, "noisy", noisy_run))
    noise = torch.cat([(noisy[k] - quiet[k]).flatten() for k in quiet])
    # The clients clipped their own updates; the server's noise on the sum, over m clients.
    assert float(noise.std()) == pytest.approx(sigma * clip / clients, rel=0.1)

    # Distributed: each client adds noise for the 3 of 4 that dp.distributed.dropout 0.2 leaves,
    # so the sum of all 4 carries sqrt(4/3) times the central noise; the server adds none.
    distributed = {**noisy_run, "dp.mode": "distributed", "strategy.min-available-nodes": clients}
    shared = adapter(run_federation(tmp_path, "distributed", distributed))
    noise = torch.cat([(shared[k] - quiet[k]).flatten() for k in quiet])
    assert float(noise.std()) == pytest.approx(sigma * clip * (4 / 3) ** 0.5 / clients, rel=0.1)


def test_a_distributed_round_short_of_its_planned_clients_is_not_unmasked(tmp_path: Path) -> None:
    # Partitions 0 and 1 drop out after sharing: 3 of 5 remain, the noise was sized for 4.
    config = {
        **LORA,
        "secagg.enabled": True,
        "dp.mode": "distributed",
        "dp.noise-multiplier": 1.0,
        "secagg.reconstruction-threshold": 0.5,
        "strategy.min-available-nodes": 5,
    }
    dropped = _lost(f"train.{p.COLLECT}", {0, 1})
    folder = run_federation(tmp_path, "distributed-short", config, 5, tamper=dropped)
    factors = adapter(folder)
    factors_b = [k for k in factors if "lora_B" in k]
    assert factors_b and all(not factors[k].any() for k in factors_b)  # still the start: B = 0
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rounds[1]["client_dp_epsilon"] > 0  # the round still counts
