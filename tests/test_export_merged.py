"""``fedtune export``'s merged model: what ``from_pretrained`` loads from the export folder, with no
fedtune code, computes the run's own model (base plus adapter, a strategy's base delta, a
zeroth-order run's replayed seeds and hybrid module) to float tolerance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from federated.cli.main import main
from federated.config import parse_run_config
from federated.export.run_export import check_gguf, export_run
from federated.inference.run_folder import open_run, trained_model
from federated.model.presets import load_base_model
from federated.protocol import message_keys as keys
from federated.tasks import TASK_CAUSAL_LM
from tests.finished_runs import TINY_LM as QUICK
from tests.in_process import run_federation

ZO = {
    "mode": "zo",
    "strategy.name": "fedkseed",
    "zo.pool-size": 64,
    "zo.lr": 2e-3,
    "zo.perturbation": "low-rank",
    "zo.hybrid": "norm",  # the final norm trains first-order and must reach the export
}
WORDNET = {
    **QUICK,
    "data.name": "wordnet",
    "data.num-classes": 3,
    "data.max-per-class": 20,
    "num-server-rounds": 1,
}
TEXTS = ["Hello, how are you?", "What is the meaning of life? Tell me in a few words."]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, lora_run: Path) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    one_round = {**QUICK, "num-server-rounds": 1}
    configs = {
        "flexlora": {**one_round, "strategy.name": "flexlora"},
        "fedkseed": {**one_round, **ZO},
    }
    made = {name: run_federation(out, name, config, clients=2) for name, config in configs.items()}
    return {"fedavg": lora_run, **made}  # fedavg's: two rounds, both kept: --round picks one


def _logits(model: torch.nn.Module, tokenizer, texts=TEXTS) -> torch.Tensor:
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("strategy", ["fedavg", "flexlora", "fedkseed"])
def test_the_exported_model_computes_the_runs_model(
    runs: dict[str, Path], strategy: str, tmp_path: Path
) -> None:
    run = open_run(runs[strategy])
    trained = trained_model(run)
    module = (trained.zo.model if trained.zo else trained.local.model).eval()
    expected = _logits(module, trained.tokenizer)
    base = load_base_model(run.config.model.name, TASK_CAUSAL_LM, seed=run.config.seed)
    # The run moved the model (a test of equality with the base would pass vacuously otherwise).
    assert (expected - _logits(base, trained.tokenizer)).abs().max() > 1e-4
    if strategy == "flexlora":
        assert any(float(d.abs().max()) > 0 for d in run.model.base_delta.values())
    if strategy == "fedkseed":
        assert int((run.model.trainable[keys.SEED_SUMS] != 0).sum()) > 0

    export_run(runs[strategy], out=tmp_path)

    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(_logits(loaded, trained.tokenizer), expected, rtol=1e-5, atol=1e-5)
    # The export worked on a copy: the run's model still holds its adapter.
    torch.testing.assert_close(_logits(module, trained.tokenizer), expected)


def test_the_command_exports_a_kept_round_into_run_dir_export(runs: dict[str, Path]) -> None:
    folder = runs["fedavg"]
    assert main(["export", str(folder), "--round", "1"]) == 0
    first = AutoModelForCausalLM.from_pretrained(folder / "export")
    round_one = trained_model(open_run(folder, 1))
    tokenizer = round_one.tokenizer
    torch.testing.assert_close(
        _logits(first, tokenizer), _logits(round_one.local.model.eval(), tokenizer)
    )
    assert main(["export", str(folder)]) == 0
    last = AutoModelForCausalLM.from_pretrained(folder / "export")
    assert (_logits(last, tokenizer) - _logits(first, tokenizer)).abs().max() > 1e-5


def test_the_command_says_in_one_line_what_it_cannot_export(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["export", str(runs["fedavg"]), "--round", "7"]) == 2
    assert main(["export", str(tmp_path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("fedtune export: ") and "no checkpoint of round 7" in errors[0]
    assert "fedtune run folder" in errors[1]


def test_gguf_is_refused_for_a_classifier_and_unknown_types() -> None:
    classifier = parse_run_config({"model.name": "tiny-bert", "data.name": "wordnet"})
    with pytest.raises(ValueError, match=r"llama family \(llama, mistral, qwen2\).*classifier"):
        check_gguf(classifier, ("f16",))
    with pytest.raises(ValueError, match="not one of f16, q8_0, q4_0"):
        check_gguf(parse_run_config({"model.name": "tiny-llama"}), ("q2_k",))


@pytest.mark.parametrize(
    ("bits", "tolerance"),
    [
        pytest.param("4bit", 1e-5, marks=pytest.mark.slow),  # a run of its own
        # LLM.int8 also rounds each layer's input rows to 8 bits, which the float32 export
        # does not: within a few times that rounding (1/254) of the largest logit.
        pytest.param("8bit", 4 / 254, marks=pytest.mark.slow),
    ],
)
def test_a_k_bit_run_exports_its_dequantized_base_plus_adapter(
    bits: str, tolerance: float, tmp_path: Path
) -> None:
    config = {**QUICK, "num-server-rounds": 1, "model.quantization": bits}
    folder = run_federation(tmp_path, bits, config, clients=2)
    trained = trained_model(open_run(folder))
    expected = _logits(trained.local.model.eval(), trained.tokenizer)

    export_run(folder)

    loaded = AutoModelForCausalLM.from_pretrained(folder / "export")
    assert (
        loaded.dtype == torch.float32
        and getattr(loaded.config, "quantization_config", None) is None
    )
    error = (_logits(loaded, trained.tokenizer) - expected).abs().max()
    assert error <= tolerance * expected.abs().max()


def test_a_classifier_exports_with_its_class_names(tmp_path: Path) -> None:
    config = {**WORDNET, "model.name": "tiny-bert"}
    folder = run_federation(tmp_path, "classifier", config, clients=2)
    trained = trained_model(open_run(folder))
    expected = _logits(trained.local.model.eval(), trained.tokenizer)

    export_run(folder)

    loaded = AutoModelForSequenceClassification.from_pretrained(folder / "export")
    torch.testing.assert_close(_logits(loaded, trained.tokenizer), expected, rtol=1e-5, atol=1e-5)
    assert sorted(loaded.config.id2label.values())[0].startswith(("adj.", "adv.", "noun.", "verb."))


def test_classification_as_generation_exports_the_language_model(tmp_path: Path) -> None:
    config = {**WORDNET, "model.task": "classification-as-generation"}
    folder = run_federation(tmp_path, "verbalized", config, clients=2)
    trained = trained_model(open_run(folder))
    classifier = trained.local.model.eval()
    batch = trained.tokenizer(["Which kind of word is this? A dog."], return_tensors="pt")
    with torch.no_grad():
        expected = classifier(**batch).logits

    check_gguf(trained.config, ("f16",))  # a language model: GGUF is written for it too
    export_run(folder)

    loaded = AutoModelForCausalLM.from_pretrained(folder / "export")
    with torch.no_grad():
        next_token = loaded(**batch).logits[:, -1]
    label_tokens = classifier.get_base_model().label_tokens
    torch.testing.assert_close(next_token[:, label_tokens], expected, rtol=1e-5, atol=1e-5)
