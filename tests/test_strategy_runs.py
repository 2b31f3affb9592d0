"""Every registered strategy through whole runs of the real ServerApp and ClientApps (in
process, ``tests.in_process``) on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from federated.config import parse_run_config
from federated.model.adapter_files import BASE_DELTA_FILE, load_global_adapter
from federated.model.evaluation import evaluate_model
from federated.model.presets import load_base_model
from federated.model.workspace import encode_indices, lora_model, num_labels, server_test_indices
from strategies.registry import STRATEGIES
from tests.in_process import run_federation

pytestmark = pytest.mark.slow

# A random tiny LM learns chatterbot's token statistics within two rounds, which every strategy
# must show on the server's test set.
BASE = {
    "model.name": "tiny-llama",
    "num-server-rounds": 2,
    "lora.rank": 4,
    "lora.alpha": 8.0,
    "train.lr": 0.02,
    "train.local-steps": 3,
    "eval.max-examples": 16,
}
MIXED_RANKS = "2,4"
CLIENTS = 3  # partitions 0, 1, 2: both mixed ranks take part
LORA_STRATEGIES = sorted(n for n, c in STRATEGIES.items() if c.reply_kind == "tensors")


def _config(name: str, out: Path) -> dict:
    config = {**BASE, "strategy.name": name, "output-dir": str(out), "run-name": name}
    if name != "fedsa-lora":  # the one whose clients' held-out evaluation is tested here
        config["strategy.fraction-evaluate"] = 0.0
    if STRATEGIES[name].mixed_ranks:
        config["lora.client-ranks"] = MIXED_RANKS
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, list[dict]]]:
    out = tmp_path_factory.mktemp("strategies")
    done = {}
    for name in LORA_STRATEGIES:
        config = _config(name, out)
        folder = run_federation(out, name, config, CLIENTS)
        rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        done[name] = (config, rounds)
    return done


@pytest.mark.parametrize("name", LORA_STRATEGIES)
def test_strategy_trains_and_its_adapter_reproduces_the_test_loss(runs, name: str) -> None:
    config, rounds = runs[name]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(r["clients_accepted"] == CLIENTS for r in rounds[1:])
    assert rounds[2]["test_loss"] < rounds[0]["test_loss"]

    parsed = parse_run_config(config)
    folder = Path(config["output-dir"]) / name / "adapter"
    base = load_base_model("tiny-llama", parsed.task, num_labels=num_labels(parsed), seed=0)
    model = load_global_adapter(base, folder)
    tokenizer = lora_model(parsed).tokenizer
    test = encode_indices(
        parsed, tokenizer, server_test_indices(parsed), limit=parsed.eval.max_examples
    )
    result = evaluate_model(
        model, test, parsed.task, batch_size=16, pad_token_id=tokenizer.pad_token_id
    )
    assert result.loss == pytest.approx(rounds[2]["test_loss"], abs=1e-4)


@pytest.mark.parametrize("name", [n for n, c in sorted(STRATEGIES.items()) if c.mixed_ranks])
def test_mixed_rank_strategies_serve_clients_of_each_rank(runs, name: str) -> None:
    _, rounds = runs[name]
    ranks = {c["lora_rank"] for r in rounds[1:] for c in r["clients"]}
    assert ranks == {int(r) for r in MIXED_RANKS.split(",")}


def _mean_client_bytes(rounds: list[dict], key: str) -> float:
    values = [c[key] for r in rounds[1:] for c in r["clients"]]
    return sum(values) / len(values)


def test_ffa_lora_sends_half_and_keeps_a_frozen(runs) -> None:
    config, rounds = runs["ffa-lora"]
    _, fedavg = runs["fedavg"]
    assert _mean_client_bytes(rounds, "bytes_up") < 0.6 * _mean_client_bytes(fedavg, "bytes_up")
    final = load_file(str(Path(config["output-dir"]) / "ffa-lora" / "checkpoint.safetensors"))
    initial = lora_model(parse_run_config(config)).initial
    a_keys = [k for k in initial if "lora_A" in k]
    assert a_keys and all(torch.equal(final[k], initial[k]) for k in a_keys)


def test_fedsa_lora_reports_personal_and_global_held_out_loss(runs) -> None:
    _, rounds = runs["fedsa-lora"]
    for record in rounds[1:]:
        assert record["held_out_global_loss"] is not None
    # Each client keeps its own B: its personal model is not the global one.
    assert any(r["held_out_loss"] != r["held_out_global_loss"] for r in rounds[1:])


@pytest.mark.parametrize("name", ["flora", "fedex-lora", "flexlora"])
def test_base_delta_strategies_save_the_delta(runs, name: str) -> None:
    config, _ = runs[name]
    assert (Path(config["output-dir"]) / name / "adapter" / BASE_DELTA_FILE).is_file()


@pytest.mark.parametrize("name", ["flora", "fedex-lora"])
def test_clients_of_delta_strategies_receive_the_delta(runs, name: str) -> None:
    _, rounds = runs[name]
    _, fedavg = runs["fedavg"]
    # The dense delta travels down with the factors from round 2: far more than a header's bytes.
    assert _mean_client_bytes(rounds, "bytes_down") > 1.1 * _mean_client_bytes(fedavg, "bytes_down")


def test_flexlora_clients_receive_factors_only(runs) -> None:
    _, rounds = runs["flexlora"]
    _, fedavg = runs["fedavg"]
    # Clients restart from the truncation at the server's rank; the full-rank mean stays put.
    assert _mean_client_bytes(rounds, "bytes_down") == pytest.approx(
        _mean_client_bytes(fedavg, "bytes_down"), rel=0.01
    )
