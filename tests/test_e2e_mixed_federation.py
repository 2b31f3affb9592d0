"""A mixed federation through Flower's simulation engine: devices with the memory for the job
train LoRA, devices with inference memory only take zeroth-order steps on the same factors and
send a few bytes of (seed, scalar) pairs, which the server turns into factors and averages with
the rest; each kind alone learns, and so do both together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from federated.config import parse_run_config
from federated.devices.memory_estimate import estimate_memory
from federated.devices.planner import as_mode
from tests.profile_files import write_profiles
from tests.run_files import rounds
from tests.simulate import simulate

pytestmark = pytest.mark.slow

CLIENTS = 6
# A random tiny LM learns chatterbot's token statistics within a few rounds.
CONFIG = {
    "model.name": "tiny-llama",
    "num-server-rounds": 3,
    "lora.rank": 4,
    "lora.alpha": 8.0,
    "train.local-steps": 8,
    "train.batch-size": 2,
    "train.lr": 0.02,
    "zo.lr": 0.02,
    "zo.eps": 1e-2,
    "zo.pool-size": 256,
    "strategy.fraction-train": 1.0,
    "strategy.fraction-evaluate": 0.0,
    "strategy.min-available-nodes": CLIENTS,
}


def _profiles(path: Path) -> Path:
    """A device with room for everything and one that fits zeroth-order steps at batch 1 but
    no LoRA step (both sides of the gap, by the planner's own estimate)."""
    config = parse_run_config(CONFIG)
    length, rank = config.model.max_length, config.lora.rank
    lora = estimate_memory(config, 1, length, rank).total
    zo = estimate_memory(as_mode(config, "zo"), 1, length, rank).total
    assert zo < lora
    return write_profiles(path, {"strong": 4.0, "weak": (lora + zo) / 2 / 1e9})


# LoRA devices alone on the simulator are test_e2e_device_simulation's.
@pytest.mark.parametrize("population", ["strong:0.5,weak:0.5", "weak:1"])
def test_zeroth_order_devices_train_the_same_factors(tmp_path: Path, population: str) -> None:
    config = {
        **CONFIG,
        "simulation.population": population,
        "simulation.profiles-file": str(_profiles(tmp_path / "devices.toml")),
        "output-dir": str(tmp_path),
        "run-name": "mixed",
    }
    folder = simulate(config, CLIENTS)
    records = rounds(folder)
    modes = {d["partition_id"]: d["mode"] for d in records[1]["simulation"]["devices"]}
    assert len(modes) == CLIENTS
    for record in records[1:]:
        clients = {c["partition_id"]: c for c in record["clients"]}
        assert all(c["status"] == "ok" for c in clients.values()), record["clients"]
        for partition, mode in modes.items():
            up = clients[partition]["bytes_up"]
            # Zeroth-order: 8 pairs and the metrics; LoRA: 11.5 KB of rank-4 factors.
            assert up < 3_000 if mode == "zo" else up > 11_000, (mode, up)
    kinds = {"strong": {"lora"}, "weak": {"zo"}}
    expected = set().union(*(kinds[p.split(":")[0]] for p in population.split(",")))
    assert set(modes.values()) == expected
    planned = json.loads((folder / "summary.json").read_text())["devices"]
    assert {name: p["mode"] for name, p in planned.items()} == {
        name: next(iter(kinds[name])) for name in planned
    }
    assert records[-1]["test_loss"] < records[0]["test_loss"] - 0.01
