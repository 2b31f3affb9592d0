"""End to end through Flower's CLI and simulation engine: `flwr run .` on a tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from federated.cli.flower_cli import FlowerCli
from federated.config import parse_run_config
from federated.model.presets import load_base_model
from federated.model.workspace import lora_model

pytestmark = pytest.mark.slow

RUN = {
    "model.name": "'tiny-llama'",
    "num-server-rounds": "2",
    "train.lr": "0.02",
    "train.local-steps": "3",
    "eval.max-examples": "16",
}


@pytest.fixture(scope="module")
def lm_run(flower: FlowerCli, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("results")
    overrides = {**RUN, "output-dir": f"'{out}'", "run-name": "'lm'"}
    proc = flower.run(" ".join(f"{k}={v}" for k, v in overrides.items()), num_supernodes=4)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, out / "lm"


def test_each_round_reports_progress_once(lm_run) -> None:
    proc, _ = lm_run
    output = proc.stdout + proc.stderr
    assert output.count("train: 4/4 clients done") == 2  # a line each round
    for line in ("[round 1/2] clients 4/4", "[round 2/2] clients 4/4", "fedtune: done."):
        assert output.count(line) == 1, line  # Flower's line alone, not the root logger's too
    round_1 = next(line for line in output.splitlines() if "[round 1/2] clients" in line)
    assert re.search(r"\| about \d+ (s|min) left$", round_1), round_1  # round 2 to go


def test_held_out_and_test_loss_fall(lm_run) -> None:
    _, folder = lm_run
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[2]["held_out_loss"] < rounds[1]["held_out_loss"]
    assert rounds[2]["test_loss"] < rounds[1]["test_loss"] < rounds[0]["test_loss"]
    assert all(r["clients_accepted"] == 4 for r in rounds[1:])


def test_bytes_are_counted_per_client_and_add_up(lm_run) -> None:
    _, folder = lm_run
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][1:]
    config = parse_run_config({"model.name": "tiny-llama"})
    tensors = lora_model(config).initial
    payload = sum(t.numel() * 4 for t in tensors.values())
    for r in rounds:
        assert len(r["clients"]) == 4
        assert sum(c["bytes_up"] for c in r["clients"]) == r["bytes_up"]
        assert sum(c["bytes_down"] for c in r["clients"]) == r["bytes_down"]
        # Each reply carries the whole adapter once, plus per-object headers (dtype, shape and
        # the 64-character ids linking records, arrays and chunks) and the metrics.
        for c in r["clients"]:
            assert payload < c["bytes_up"] < payload + 800 * len(tensors)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["bytes_up_total"] == sum(r["bytes_up"] for r in rounds)


def test_adapter_changed_and_loads_with_peft(lm_run) -> None:
    _, folder = lm_run
    for name in ("metrics.jsonl", "summary.json", "loss.png", "checkpoint.safetensors"):
        assert (folder / name).is_file()
    base = load_base_model("tiny-llama", "causal-lm", seed=0)
    model = PeftModel.from_pretrained(base, folder / "adapter")
    initial = lora_model(parse_run_config({"model.name": "tiny-llama"})).initial
    final = load_file(str(folder / "checkpoint.safetensors"))
    assert set(final) == set(initial)
    assert any(not torch.equal(final[k], initial[k]) for k in initial)
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(final)
    b_key = next(k for k in final if "lora_B" in k)
    assert final[b_key].abs().sum() > 0  # B starts at zero: training moved it
    match = [
        v for k, v in loaded.items() if k.replace(".default", "") == b_key.replace(".default", "")
    ]
    torch.testing.assert_close(match[0], final[b_key])


def test_a_strategy_that_refuses_the_setting_stops_the_run_with_one_line(
    flower: FlowerCli, tmp_path: Path
) -> None:
    # A setting each key allows, refused when the strategy is built (a bad key's value is
    # refused before, test_e2e_bad_inputs).
    overrides = "lora.rank=4 lora.client-ranks='2,4'"
    line = "strategy 'fedavg' needs every client at lora.rank (4); mixed ranks work with"
    proc = flower.run(f"{overrides} output-dir='{tmp_path}'", num_supernodes=2, timeout=300)
    assert line in proc.stdout + proc.stderr
    assert not any(tmp_path.iterdir())
