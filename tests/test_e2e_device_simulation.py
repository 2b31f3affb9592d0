"""Two hundred simulated devices of five kinds through Flower's simulation engine: a device
without the memory for the job never trains, one that always fails or always misses the
deadline never counts, over-selection keeps the first to finish, and the run trains on the
rest with its simulated clock in metrics.jsonl and summary.json; and docs/simulation.md's example,
run as printed, drops the devices its deadline leaves behind."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from tests.run_files import rounds
from tests.simulate import ROOT, simulate

pytestmark = pytest.mark.slow

CLIENTS = 200


def _profile(name: str, memory_gb: float, downlink: float, failure: float) -> str:
    return (
        f"[profiles.{name}]\nmemory-gb = {memory_gb}\ngflops = 20\nuplink-mbps = 20\n"
        f"downlink-mbps = {downlink}\nlatency-ms = 20\navailability = 1\n"
        f"failure-rate = {failure}\n"
    )


def test_a_heterogeneous_population_trains_on_the_devices_that_can(tmp_path: Path) -> None:
    profiles = tmp_path / "devices.toml"
    profiles.write_text(
        _profile("fast", 4, 100, 0)
        + _profile("steady", 4, 50, 0)
        + _profile("small", 0.2, 100, 0)  # below the runtime itself: left out
        + _profile("crashing", 4, 100, 1.0)  # fails every round it starts
        + _profile("dial-up", 4, 0.001, 0)  # the model takes minutes to arrive: always late
    )
    config = {
        "model.name": "tiny-bert",
        "data.name": "wordnet",
        "data.num-classes": 3,
        "data.max-per-class": 400,
        "data.partitioner": "iid",
        "num-server-rounds": 2,
        "train.local-steps": 2,
        "train.batch-size": 4,
        "strategy.fraction-train": 0.05,
        "strategy.fraction-evaluate": 0.0,
        "strategy.min-train-nodes": 2,
        "strategy.min-available-nodes": CLIENTS,
        "simulation.profiles-file": str(profiles),
        "simulation.population": "fast:0.3,steady:0.2,small:0.2,crashing:0.1,dial-up:0.2",
        "simulation.deadline": 30.0,
        "simulation.over-selection": 1.5,
        "simulation.target-loss": 5.0,
        "output-dir": str(tmp_path),
        "run-name": "devices",
    }
    folder = simulate(config, CLIENTS)
    records = rounds(folder)[1:]
    assert len(records) == 2
    for record in records:
        devices = record["simulation"]["devices"]
        by_status = {d["status"] for d in devices}
        assert {d["profile"] for d in devices} <= {"fast", "steady", "crashing", "dial-up"}
        assert len(devices) == math.ceil(10 * 1.5)  # 5% of 200, over-selected
        for device in devices:
            expected = {"crashing": "failed", "dial-up": "late"}.get(device["profile"])
            assert expected is None or device["status"] == expected, device
        kept = [d["partition_id"] for d in devices if d["status"] == "kept"]
        assert 0 < len(kept) <= 10 and "kept" in by_status
        trained = sorted(c["partition_id"] for c in record["clients"] if c["status"] == "ok")
        assert trained == sorted(kept)  # only the work that counts was sent
        # The round ends with the 10th reply in time, else at the deadline.
        ends = sorted(d["finish_s"] for d in devices if d["status"] == "kept")
        duration = record["simulation"]["duration_s"]
        assert duration == (pytest.approx(ends[-1], abs=1e-3) if len(kept) == 10 else 30.0)
        assert math.isfinite(record["test_loss"])
        assert record["simulation"]["devices_left_out"] == 40  # the "small" 20%
        kept_profiles = {d["profile"] for d in devices if d["status"] == "kept"}
        assert set(record["simulation"]["memory_mb_by_profile"]) == kept_profiles
    statuses = {d["status"] for r in records for d in r["simulation"]["devices"]}
    assert statuses == {"kept", "failed", "late", "not needed"}  # every fate happened
    assert (folder / "simulated_time.png").is_file() and (folder / "round_timeline.png").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    total = sum(r["simulation"]["duration_s"] for r in records) / 3600
    assert summary["simulated_hours"] == pytest.approx(total)
    assert summary["hours_to_test_loss_5"] == 0.0  # the initial model is already there
    profiles = summary["devices"]
    assert profiles["small"]["mode"] is None and profiles["small"]["plan"].startswith("left out")
    assert profiles["small"]["devices"] == 40 and profiles["fast"]["mode"] == "lora"
    assert 100 < profiles["fast"]["memory_mb"] < 4000


def _doc_command(page: Path) -> str:
    """The first command of ``page``'s first bash block, its continuation lines joined."""
    block = page.read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    return block.replace("\\\n", " ").strip()


def test_the_simulation_pages_example_runs_as_printed_and_its_deadline_binds(
    flower, tmp_path: Path
) -> None:
    command = _doc_command(ROOT / "docs" / "simulation.md")
    assert command.startswith("fedtune run . ")
    # As pasted, plus a second --run-config that sends the results to the test's folder.
    line = f"{command} --run-config \"output-dir='{tmp_path}' run-name='doc'\""
    proc = subprocess.run(
        ["bash", "-c", line], cwd=ROOT, env=flower.env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    deadline = float(command.split("simulation.deadline=")[1].split()[0])
    records = rounds(tmp_path / "doc")[1:]
    late = [d for r in records for d in r["simulation"]["devices"] if d["status"] == "late"]
    assert late, "the example's deadline dropped nobody"
    for record in records:
        assert record["simulation"]["duration_s"] <= deadline + 1e-9
    assert (tmp_path / "doc" / "round_timeline.png").is_file()
