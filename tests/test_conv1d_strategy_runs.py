"""The strategies that move the frozen base weights (flora, fedex-lora, flexlora), over whole runs
in process on a GPT-2-style model, whose ``Conv1D`` layers store their weights transposed: the
run trains, and the saved adapter with its base delta reproduces the server's final test loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from federated.config import parse_run_config
from federated.model.adapter_files import BASE_DELTA_FILE, load_global_adapter
from federated.model.evaluation import evaluate_model
from federated.model.presets import load_base_model
from federated.model.workspace import encode_indices, lora_model, server_test_indices
from tests.gpt2_fixture import save_tiny_gpt2
from tests.in_process import run_federation
from tests.run_files import rounds

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


@pytest.mark.parametrize("strategy", ["fedex-lora", "flexlora", "flora"])
def test_base_delta_strategies_train_a_conv1d_model(
    strategy: str, gpt2_folder: Path, tmp_path: Path
) -> None:
    config = {
        "model.name": str(gpt2_folder),
        "model.max-length": 64,
        "strategy.name": strategy,
        "num-server-rounds": 2,
        "lora.rank": 4,
        "lora.target-modules": "all-linear",  # every Conv1D layer, square and not
        "train.lr": 0.02,
        "train.local-steps": 4,
        "eval.max-examples": 64,
        "strategy.fraction-evaluate": 0.0,
    }
    folder = run_federation(tmp_path, strategy, config, clients=3)
    records = rounds(folder)
    assert all(r["clients_accepted"] == 3 for r in records[1:])
    assert records[-1]["test_loss"] < records[0]["test_loss"]
    assert (folder / "adapter" / BASE_DELTA_FILE).is_file()

    parsed = parse_run_config(config)
    model = load_global_adapter(
        load_base_model(str(gpt2_folder), parsed.task, seed=0), folder / "adapter"
    )
    tokenizer = lora_model(parsed).tokenizer
    test = encode_indices(parsed, tokenizer, server_test_indices(parsed), limit=64)
    result = evaluate_model(
        model, test, parsed.task, batch_size=16, pad_token_id=tokenizer.pad_token_id
    )
    assert result.loss == pytest.approx(records[-1]["test_loss"], abs=1e-4)
