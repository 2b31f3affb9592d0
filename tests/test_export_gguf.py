"""``fedtune export --gguf``: each file read back by the ``gguf`` package (metadata, tensors and
their types) and by transformers' GGUF loader, which rebuilds the model (undoing the query and
key permutation) and the tokenizer from the file alone.

The logits' bounds follow from each type's rounding. f16 keeps 11 significant bits: each weight
within 2^-11 of itself relative. q8_0 stores blocks of 32 as int8 times one scale, the block's
largest magnitude / 127: each weight within half a step, 1/254 of its block's largest. q4_0 does
the same in 4 bits with the scale largest / 8: within 1/16 of the block's largest (but for
the few values clipped at +7 steps, see `test_each_weight_is_within_its_types_rounding`). A
layer's output then errs by about that share of its size, and a few layers in sequence add up; the
tests allow 4 times the share, relative to the largest logit (measured on this tiny model:
f16 3e-4, q8_0 8e-3, q4_0 8e-2 of it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, LlamaFileType
from gguf.quants import dequantize
from transformers import AutoModelForCausalLM, AutoTokenizer, MistralConfig, Qwen2Config

from federated.export.gguf_file import write_gguf
from federated.export.gguf_llama import llama_tensors
from federated.export.gguf_types import encoded, tensor_type
from federated.export.run_export import export_run
from federated.model.presets import base_model_config, load_tokenizer
from federated.tasks import TASK_CAUSAL_LM

TYPES = ("f16", "q8_0", "q4_0")
SLOW = pytest.mark.slow  # each load through transformers' GGUF reader takes seconds
SHARE = {"f16": 2.0**-11, "q8_0": 1 / 254, "q4_0": 1 / 16}
TEXTS = ["Hello, how are you?", "What is 3333 + 12? Tell me, café owner 🚀."]


@pytest.fixture(scope="module")
def export(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_run(lora_run, out=tmp_path_factory.mktemp("gguf"), gguf_types=TYPES).folder


@pytest.fixture(scope="module")
def readers(export: Path) -> dict[str, GGUFReader]:
    return {t: GGUFReader(export / f"tiny-llama-{t}.gguf") for t in TYPES}


def _logits(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(TEXTS, return_tensors="pt", padding=True)).logits


def _alone(path: Path, tmp_path: Path) -> Path:
    """The file in a folder of its own, as it is copied to a device (in the export folder,
    transformers would mix the folder's tokenizer files into the one it rebuilds)."""
    shutil.copy(path, tmp_path / path.name)
    return tmp_path


@pytest.mark.parametrize("gguf_type", TYPES)
def test_the_file_holds_the_llama_networks_parameters_and_tensors(
    export: Path, readers: dict[str, GGUFReader], gguf_type: str
) -> None:
    reader = readers[gguf_type]
    field = {name: f.contents() for name, f in reader.fields.items()}
    config = AutoModelForCausalLM.from_pretrained(export).config
    assert field["general.architecture"] == "llama"
    assert (
        field["general.file_type"]
        == {
            "f16": LlamaFileType.MOSTLY_F16,
            "q8_0": LlamaFileType.MOSTLY_Q8_0,
            "q4_0": LlamaFileType.MOSTLY_Q4_0,
        }[gguf_type]
    )
    assert field["llama.block_count"] == config.num_hidden_layers == 2
    assert field["llama.attention.head_count"] == 4
    assert field["llama.attention.head_count_kv"] == 2
    assert field["llama.embedding_length"] == 64
    assert field["llama.rope.dimension_count"] == 16
    assert field["tokenizer.ggml.model"] == "gpt2" and field["tokenizer.ggml.pre"] == "smollm"
    assert len(field["tokenizer.ggml.tokens"]) == config.vocab_size
    # 9 tensors a block, the token embedding, the final norm; the tied output matrix is left out.
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert len(types) == 2 * 9 + 2 and "output.weight" not in types
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    blocks = GGMLQuantizationType[gguf_type.upper()]
    assert types["blk.1.ffn_down.weight"] == blocks
    assert types["token_embd.weight"] == (
        GGMLQuantizationType.Q8_0 if gguf_type == "q4_0" else blocks
    )


@pytest.mark.parametrize("gguf_type", TYPES)
def test_each_weight_is_within_its_types_rounding(
    export: Path, readers: dict[str, GGUFReader], gguf_type: str
) -> None:
    """Every stored tensor, read back, against the merged model's (rows permuted as written):
    f16 within 2^-11 of each value; q8_0 within half a step of its block of 32, the block's
    largest magnitude / 127; q4_0 within one step, the largest / 8 (its 16 levels run from -8 to
    +7 steps, the largest at -8: a value of the other sign beyond 7.5 steps is clipped to 7);
    both plus the scale's own f16 rounding (2^-11 of it, times at most 127 or 8 steps)."""
    expected = dict(llama_tensors(AutoModelForCausalLM.from_pretrained(export)))
    stored = {t.name: t for t in readers[gguf_type].tensors}
    assert set(stored) == set(expected)
    steps = {GGMLQuantizationType.Q8_0: 127, GGMLQuantizationType.Q4_0: 8}
    rounding = {GGMLQuantizationType.Q8_0: 0.5, GGMLQuantizationType.Q4_0: 1.0}
    for name, tensor in stored.items():
        weight = expected[name]
        read = dequantize(tensor.data, tensor.tensor_type).reshape(weight.shape)
        error = np.abs(read - weight)
        if tensor.tensor_type == GGMLQuantizationType.F32:
            assert error.max() == 0, name
        elif tensor.tensor_type == GGMLQuantizationType.F16:
            assert (error <= 2.0**-11 * np.abs(weight) + 2.0**-24).all(), name
        else:
            largest = np.abs(weight.reshape(-1, 32)).max(axis=1, keepdims=True)
            step = largest / steps[tensor.tensor_type]
            bound = step * (rounding[tensor.tensor_type] + steps[tensor.tensor_type] * 2.0**-11)
            assert (error.reshape(-1, 32) <= bound * (1 + 1e-6)).all(), name
            assert error.max() > 0, name


@pytest.mark.parametrize("gguf_type", [pytest.param(t, marks=SLOW) for t in TYPES])
def test_transformers_rebuilds_the_model_within_the_types_rounding(
    export: Path, gguf_type: str
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(export)
    expected = _logits(AutoModelForCausalLM.from_pretrained(export), tokenizer)
    model = AutoModelForCausalLM.from_pretrained(export, gguf_file=f"tiny-llama-{gguf_type}.gguf")
    error = (_logits(model, tokenizer) - expected).abs().max()
    assert error <= 4 * SHARE[gguf_type] * expected.abs().max()
    assert error > 0  # the file is the rounded one, not a copy of the float32 weights


def test_the_tokenizer_rebuilt_from_the_file_encodes_as_the_original(
    export: Path, tmp_path: Path
) -> None:
    original = AutoTokenizer.from_pretrained(export)
    rebuilt = AutoTokenizer.from_pretrained(
        _alone(export / "tiny-llama-q4_0.gguf", tmp_path), gguf_file="tiny-llama-q4_0.gguf"
    )
    chat = [{"role": "user", "content": "Hi there!"}]
    texts = [*TEXTS, original.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)]
    for text in texts:
        assert rebuilt(text)["input_ids"] == original(text)["input_ids"]
    assert rebuilt.chat_template == original.chat_template
    for token in ("bos_token", "eos_token", "pad_token", "unk_token"):
        assert getattr(rebuilt, token) == getattr(original, token)


def test_each_tensor_is_stored_in_its_type_or_f16_where_rows_do_not_split_into_blocks() -> None:
    rows = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    assert tensor_type("blk.0.attn_norm.weight", (64,), "q4_0") == GGMLQuantizationType.F32
    assert tensor_type("output.weight", (8, 64), "q4_0") == GGMLQuantizationType.Q8_0
    assert tensor_type("blk.0.attn_q.weight", (8, 64), "q8_0") == GGMLQuantizationType.Q8_0
    data, qtype = encoded(rows, GGMLQuantizationType.Q4_0)
    assert qtype == GGMLQuantizationType.Q4_0 and data.nbytes == 8 * 2 * 18  # 2 blocks of 18 bytes
    odd, qtype = encoded(rows[:, :40], GGMLQuantizationType.Q8_0)
    assert qtype == GGMLQuantizationType.F16 and odd.dtype == np.float16


@SLOW
@pytest.mark.parametrize("config_class", [MistralConfig, Qwen2Config])
def test_mistral_and_qwen2_models_are_written_as_llama_cpp_reads_them(
    config_class: type, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer("tiny-llama")
    tiny = base_model_config("tiny-llama", TASK_CAUSAL_LM)
    shape = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers")
    heads = ("num_attention_heads", "num_key_value_heads")
    config = config_class(
        **{key: getattr(tiny, key) for key in shape + heads}, tie_word_embeddings=False
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # Qwen2's query, key and value biases start at zero: make them count
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.5)
    tokenizer.save_pretrained(tmp_path)
    write_gguf(model, tokenizer, tmp_path, tmp_path / "m.gguf", "f16", "m")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf")
    reader = GGUFReader(tmp_path / "m.gguf")
    names = {t.name for t in reader.tensors}
    assert "output.weight" in names
    assert ("blk.0.attn_q.bias" in names) == (config.model_type == "qwen2")
    expected = _logits(model, tokenizer)
    error = (_logits(loaded, tokenizer) - expected).abs().max()
    assert error <= 4 * SHARE["f16"] * expected.abs().max()


def test_an_architecture_outside_the_family_is_refused_in_one_line(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = load_tokenizer("tiny-llama")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2))
    with pytest.raises(
        ValueError,
        match=r"llama family \(llama, mistral, qwen2 causal LMs\); this model is 'gpt2'$",
    ):
        write_gguf(model, tokenizer, tmp_path, tmp_path / "g.gguf", "f16", "g")
    assert not list(tmp_path.glob("*.gguf*"))
