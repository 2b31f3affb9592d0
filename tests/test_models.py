"""Model presets: offline loading, determinism per seed, tokenizers, and the one-time conversion."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from huggingface_hub import is_offline_mode

from federated.model import presets as models
from federated.model.presets import (
    PRESETS,
    TASK_CAUSAL_LM,
    TASK_CLASSIFICATION,
    cache_dir,
    load_base_model,
    load_tokenizer,
    model_task,
)

torch.set_num_threads(1)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_presets_name_their_tasks() -> None:
    assert set(PRESETS) == {"smollm2-135m", "minilm-l6", "tiny-llama", "tiny-bert"}
    assert model_task("smollm2-135m") == TASK_CAUSAL_LM
    assert model_task("tiny-llama") == TASK_CAUSAL_LM
    assert model_task("minilm-l6") == TASK_CLASSIFICATION
    assert model_task("tiny-bert") == TASK_CLASSIFICATION
    assert model_task("HuggingFaceTB/SmolLM2-135M") is None
    assert all(PRESETS[name].name == name for name in PRESETS)


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEDTUNE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FEDTUNE_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "fedtune"


def test_tiny_llama_is_deterministic_per_seed_and_shaped_as_specified() -> None:
    a = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=3)
    b = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=3)
    c = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=4)
    assert _same_weights(a, b)
    assert not torch.equal(
        a.model.layers[0].self_attn.q_proj.weight, c.model.layers[0].self_attn.q_proj.weight
    )
    cfg = a.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (64, 2, 4)
    assert (cfg.num_key_value_heads, cfg.intermediate_size) == (2, 128)
    assert cfg.vocab_size == len(load_tokenizer("tiny-llama")) == 49152
    assert a.lm_head.weight.data_ptr() == a.model.embed_tokens.weight.data_ptr()
    assert all(p.dtype == torch.float32 for p in a.parameters())
    with torch.no_grad():
        logits = a(input_ids=torch.tensor([[1, 2, 3, 4, 5]])).logits
    assert logits.shape == (1, 5, 49152)


def test_tiny_bert_is_deterministic_per_seed_and_shaped_as_specified() -> None:
    a = load_base_model("tiny-bert", TASK_CLASSIFICATION, num_labels=5, seed=0)
    b = load_base_model("tiny-bert", TASK_CLASSIFICATION, num_labels=5, seed=0)
    c = load_base_model("tiny-bert", TASK_CLASSIFICATION, num_labels=5, seed=1)
    assert _same_weights(a, b)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    cfg = a.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (64, 2, 4)
    assert cfg.intermediate_size == 128
    assert cfg.vocab_size == len(load_tokenizer("tiny-bert")) == 30522
    a.eval()
    with torch.no_grad():
        logits = a(input_ids=torch.tensor([[101, 2000, 3000, 102]])).logits
    assert logits.shape == (1, 5)


def test_loading_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_base_model("tiny-bert", TASK_CLASSIFICATION, num_labels=2, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_tokenizers_have_pad_tokens() -> None:
    llama_tok = load_tokenizer("tiny-llama")
    assert llama_tok.pad_token is not None
    # SmolLM2 has no separate pad token: it pads with EOS, so losses must mask by attention mask.
    assert llama_tok.pad_token == llama_tok.eos_token == "<|im_end|>"
    assert llama_tok.model_max_length == 8192
    assert "<|im_start|>assistant" in llama_tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    bert_tok = load_tokenizer("tiny-bert")
    assert bert_tok.pad_token == "[PAD]" and bert_tok.pad_token_id == 0
    batch = bert_tok(["one", "two words here"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]


def test_a_local_path_loads_like_its_preset(tmp_path: Path) -> None:
    model = load_base_model("tiny-bert", TASK_CLASSIFICATION, num_labels=4, seed=2)
    model.save_pretrained(tmp_path / "m")
    load_tokenizer("tiny-bert").save_pretrained(tmp_path / "m")
    again = load_base_model(str(tmp_path / "m"), TASK_CLASSIFICATION, num_labels=4)
    assert type(again) is type(model)
    assert _same_weights(model, again)
    assert load_tokenizer(str(tmp_path / "m")).pad_token == "[PAD]"


@pytest.mark.parametrize(
    ("name", "task", "num_labels", "message"),
    [
        ("tiny-llama", "regression", None, "task 'regression' is not one of"),
        ("tiny-bert", TASK_CAUSAL_LM, None, "is a classification preset"),
        ("tiny-bert", TASK_CLASSIFICATION, None, "num_labels >= 2"),
        ("tiny-bert", TASK_CLASSIFICATION, 1, "num_labels >= 2"),
        ("tiny-llama", TASK_CAUSAL_LM, 3, "num_labels applies to classification only"),
    ],
)
def test_bad_arguments_fail_with_one_line(
    name: str, task: str, num_labels: int | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as info:
        load_base_model(name, task, num_labels=num_labels)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not is_offline_mode(), reason="needs HF_HUB_OFFLINE=1 before huggingface_hub")
@pytest.mark.parametrize("name", ["smolllm2-135m", "./no/such/model"])
def test_unknown_names_fail_with_one_line(name: str) -> None:
    with pytest.raises(ValueError) as info:
        load_base_model(name, TASK_CAUSAL_LM)
    text = str(info.value)
    assert "\n" not in text
    assert (
        f"model {name!r} is neither a preset (smollm2-135m, minilm-l6, tiny-llama, tiny-bert)"
        in text
    )
    with pytest.raises(ValueError, match="neither a preset"):
        load_tokenizer(name)


def test_build_once_builds_once_under_concurrency(tmp_path: Path) -> None:
    target = tmp_path / "converted"
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        out.mkdir()
        time.sleep(0.2)  # long enough for every thread to be waiting on the lock
        (out / "weights.bin").write_bytes(b"w")

    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(models._build_once(target, build)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [target] * 4
    assert len(calls) == 1
    assert (target / "weights.bin").read_bytes() == b"w"
    # Nothing half-written is left next to the target.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".converted.lock", "converted"]


def test_build_once_loser_of_the_rename_uses_the_winners_folder(tmp_path: Path) -> None:
    target = tmp_path / "converted"

    def winner(out: Path) -> None:
        out.mkdir()
        (out / "who").write_text("winner")
        (out / models._MARKER_FILE).write_text(json.dumps({"version": models._CONVERSION_VERSION}))

    def build_while_another_process_wins(out: Path) -> None:
        # Simulates a process on a file system where the lock did not hold finishing first.
        winner(target)
        out.mkdir()
        (out / "who").write_text("loser")

    assert models._build_once(target, build_while_another_process_wins) == target
    assert (target / "who").read_text() == "winner"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".converted.lock", "converted"]


def test_build_once_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "converted").mkdir()
    (tmp_path / "converted" / "junk").write_text("x")
    with pytest.raises(ValueError, match="not a complete fedtune conversion; delete it"):
        models._build_once(tmp_path / "converted", lambda out: None)


@pytest.mark.slow
def test_smollm2_loads_offline_and_answers_a_chat_prompt() -> None:
    model = load_base_model("smollm2-135m", TASK_CAUSAL_LM)
    tokenizer = load_tokenizer("smollm2-135m")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.float32
    model.eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=24, do_sample=False)
    new_tokens = out[0, prompt["input_ids"].shape[1] :]
    answer = tokenizer.decode(new_tokens, skip_special_tokens=True)
    assert len(answer.split()) >= 3
    assert len(set(new_tokens.tolist())) >= 5  # not one token repeated
    assert "Paris" in answer
    assert new_tokens[-1].item() == tokenizer.eos_token_id  # stops by itself


@pytest.mark.slow
def test_minilm_loads_with_a_new_head_and_runs_forward() -> None:
    model = load_base_model("minilm-l6", TASK_CLASSIFICATION, num_labels=8, seed=0)
    same = load_base_model("minilm-l6", TASK_CLASSIFICATION, num_labels=8, seed=0)
    other = load_base_model("minilm-l6", TASK_CLASSIFICATION, num_labels=8, seed=1)
    assert model.config.num_labels == 8 and model.config.hidden_size == 384
    assert torch.equal(model.classifier.weight, same.classifier.weight)
    assert not torch.equal(model.classifier.weight, other.classifier.weight)
    # The encoder comes from the checkpoint, whatever the seed.
    assert torch.equal(
        model.bert.embeddings.word_embeddings.weight, other.bert.embeddings.word_embeddings.weight
    )
    tokenizer = load_tokenizer("minilm-l6")
    batch = tokenizer(["a dog is an animal", "to run quickly"], padding=True, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 8)
    assert torch.isfinite(logits).all()


def test_a_path_without_a_model_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="could not be loaded") as info:
        load_base_model(str(tmp_path / "empty"), TASK_CAUSAL_LM)
    assert "\n" not in str(info.value)
