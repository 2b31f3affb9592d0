"""Any causal LM or classifier by folder: a tiny random model of each family, saved as a user's
own model would be, loads through fedtune's path with LoRA on its architecture's targets, trains
its adapter (and head) alone, and an architecture fedtune cannot adapt is refused in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    DistilBertConfig,
    Gemma2Config,
    GemmaConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    Phi3Config,
    PhiConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    RobertaConfig,
)

from client.lora_trainer import train_lora
from federated.cli.main import main
from federated.config import ConfigError, LoraSettings, ModelSettings, parse_run_config
from federated.data.corpus import Example
from federated.model.lora import adapted_names, lora_pairs, trainable_state
from federated.model.lora_targets import adaptable_linear_layers, known_targets
from federated.model.presets import load_tokenizer
from federated.model.workspace import encode_records, lora_model, wrapped
from server.run import loading
from tests.gpt2_fixture import tiny_gpt2_config

ROOT = Path(__file__).resolve().parent.parent
ENCODER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
DECODER = ENCODER | dict(num_key_value_heads=2, head_dim=8)


def _gpt2(tok: PreTrainedTokenizerBase) -> GPT2Config:
    return tiny_gpt2_config(tok, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def _decoder(config_class: type[PretrainedConfig], **extra) -> Callable:
    return lambda tok: config_class(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **(DECODER | extra),
    )


def _encoder(config_class: type[PretrainedConfig]) -> Callable:
    # RoBERTa counts positions from after its pad id: room for them beyond max-length.
    return lambda tok: config_class(
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, max_position_embeddings=80, **ENCODER
    )


def _distilbert(tok: PreTrainedTokenizerBase) -> DistilBertConfig:
    return DistilBertConfig(
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, dim=32, n_layers=2, n_heads=4
    )


def _byte_level_bpe() -> PreTrainedTokenizerFast:
    """GPT-2's kind of tokenizer (byte-level BPE, an end-of-sequence token, no pad token), learned
    from one line: 284 tokens, so that a model's embeddings are tiny too."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(["a question about a topic, another question, an answer"], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


# family: its config from the tokenizer, whose tokenizer (decoders a byte-level BPE, encoders
# MiniLM's WordPiece), the adapted modules auto picks, the head.
FAMILIES = {
    "llama": (_decoder(LlamaConfig), "bpe", ["q_proj", "v_proj"], "score"),
    "mistral": (_decoder(MistralConfig), "bpe", ["q_proj", "v_proj"], "score"),
    "qwen2": (_decoder(Qwen2Config), "bpe", ["q_proj", "v_proj"], "score"),
    "gemma": (_decoder(GemmaConfig), "bpe", ["q_proj", "v_proj"], "score"),
    "gemma2": (_decoder(Gemma2Config), "bpe", ["q_proj", "v_proj"], "score"),
    "phi": (_decoder(PhiConfig), "bpe", ["q_proj", "v_proj", "fc1", "fc2"], "score"),
    "phi3": (_decoder(Phi3Config, pad_token_id=None), "bpe", ["qkv_proj"], "score"),
    "gpt2": (_gpt2, "bpe", ["c_attn"], "score"),
    "olmo2": (_decoder(Olmo2Config), "bpe", ["q_proj", "v_proj"], "score"),  # by Llama's names
    "bert": (_encoder(BertConfig), "tiny-bert", ["query", "value"], "classifier"),
    "roberta": (_encoder(RobertaConfig), "tiny-bert", ["query", "value"], "classifier"),
    "distilbert": (_distilbert, "tiny-bert", ["q_lin", "v_lin"], "pre_classifier,classifier"),
}
CAUSAL = ["llama", "mistral", "qwen2", "gemma", "gemma2", "phi", "phi3", "gpt2", "olmo2"]
CLASSIFIERS = ["llama", "gpt2", "phi3", "bert", "roberta", "distilbert"]


def _save(folder: Path, family: str, tokenizer: PreTrainedTokenizerBase) -> Path:
    """The family's tiny random model as a checkpoint on disk: the causal LM for decoders, the
    bare encoder for encoders (its classification head is new when loaded, as with BERT)."""
    build, _, _, _ = FAMILIES[family]
    config = build(tokenizer)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        auto = AutoModel if config.model_type in ("bert", "roberta", "distilbert") else None
        model = (auto or AutoModelForCausalLM).from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    made: dict[str, Path] = {}

    def folder(family: str) -> Path:
        if family not in made:
            kind = FAMILIES[family][1]
            tokenizer = _byte_level_bpe() if kind == "bpe" else load_tokenizer(kind)
            made[family] = _save(tmp_path_factory.mktemp(family), family, tokenizer)
        return made[family]

    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = [
        {"text": f"question {i} about topic {i % 3}", "target": f"answer {i}", "label": i % 3}
        for i in range(8)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _run_config(folder: Path, task: str, data: Path, **extra: object):
    return parse_run_config(
        {
            "model.name": str(folder),
            "model.task": task,
            "model.max-length": 24,
            "data.name": str(data),
            "lora.rank": 2,
            "lora.dropout": 0.0,
            "train.local-steps": 1,
            "train.batch-size": 4,
            "train.lr": 0.01,
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("family", "task"),
    [(f, "causal-lm") for f in CAUSAL] + [(f, "classification") for f in CLASSIFIERS],
)
def test_a_folder_model_trains_its_architectures_adapter_and_head_alone(
    folders, data, family: str, task: str
) -> None:
    config = _run_config(folders(family), task, data)
    local = lora_model(config, fresh=True)
    _, _, targets, head = FAMILIES[family]
    assert adapted_names(local.model) == targets

    state = trainable_state(local.model)
    pairs, others = lora_pairs(state)
    layers = [n for n, m in local.model.named_modules() if hasattr(m, "lora_A")]
    assert len(pairs) == len(layers) == 2 * len(targets)  # each target in both blocks
    heads = head.split(",") if task == "classification" else []
    assert {key.split(".")[2] for key in others} == set(heads)

    before = {n: p.detach().clone() for n, p in local.model.named_parameters()}
    examples = [Example(text="a question", target="an answer", label=1)] * 2 + [
        Example(text="another question, longer", target="another answer", label=2)
    ] * 2
    encoded = encode_records(config, local.tokenizer, examples)
    pad = local.tokenizer.pad_token_id
    generator = torch.Generator().manual_seed(0)
    train_lora(local.model, encoded, task, config.train, pad_token_id=pad, generator=generator)
    changed = {n for n, p in local.model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in local.model.named_parameters() if p.requires_grad}
    assert changed <= trainable
    # B starts at zero, so the first step moves B (and the head) but leaves A where it was.
    assert {n for n in trainable if ".lora_B." in n} <= changed
    assert not {n for n in changed if ".lora_A." in n}
    assert all(any(f".{h}." in n for n in changed) for h in heads)


def test_a_decoder_classifier_pads_as_its_batches_do(folders, data) -> None:
    """GPT-2's config has no pad token: without one, a batch of two cannot be classified."""
    config = _run_config(folders("gpt2"), "classification", data)
    model = lora_model(config, fresh=True).model
    tokenizer = load_tokenizer(str(folders("gpt2")))
    assert model.config.pad_token_id == tokenizer.pad_token_id == tokenizer.eos_token_id
    # Each row is classified at its last real token: padding the shorter row changes nothing.
    ids = tokenizer("a short one", add_special_tokens=False)["input_ids"]
    padded = torch.tensor([ids + [tokenizer.pad_token_id] * 3, ids + [7, 8, 9]])
    mask = torch.tensor([[1] * len(ids) + [0] * 3, [1] * (len(ids) + 3)])
    model.eval()
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([ids])).logits[0]
        batched = model(input_ids=padded, attention_mask=mask).logits[0]
    torch.testing.assert_close(batched, alone)


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.mark.parametrize(
    ("template", "prompt"),
    [
        (CHATML, "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"),
        (None, "Question: Hi there\nAnswer: "),
    ],
)
def test_a_folder_tokenizers_chat_template_renders_the_prompt(
    tmp_path: Path, data, template: str | None, prompt: str
) -> None:
    tokenizer = _byte_level_bpe()
    tokenizer.chat_template = template
    folder = _save(tmp_path / "m", "qwen2", tokenizer)
    config = _run_config(folder, "causal-lm", data, **{"model.max-length": 96})
    mine = load_tokenizer(str(folder))
    [encoded] = encode_records(config, mine, [Example(text="Hi there", target="Hello")])
    labels = encoded["labels"]
    masked = [t for t, label in zip(encoded["input_ids"], labels, strict=True) if label < 0]
    assert mine.decode(masked) == prompt
    assert mine.decode(labels[len(masked) :]) == "Hello<|endoftext|>"


class _Config(PretrainedConfig):
    model_type = "embeddings-only"


class _EmbeddingsOnly(nn.Module):
    """A model of an architecture fedtune knows nothing about, with no linear layer but its
    output layer: nothing that all-linear adapts."""

    def __init__(self, model_type: str) -> None:
        super().__init__()
        self.config = _Config()
        self.config.model_type = model_type
        self.embed = nn.Embedding(16, 8)
        self.lm_head = nn.Linear(8, 16)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head


@pytest.mark.parametrize(
    ("model_type", "message"),
    [
        ("embeddings-only", "model_type 'embeddings-only' has no known LoRA targets and no linear"),
        ("llama", r"model_type 'llama': its LoRA targets \('q_proj', 'v_proj'\) match no module"),
    ],
)
def test_an_architecture_auto_cannot_adapt_is_one_line(model_type: str, message: str) -> None:
    model = _EmbeddingsOnly(model_type)
    assert adaptable_linear_layers(model) == []
    with pytest.raises(ConfigError, match=message) as info:
        wrapped(model, ModelSettings(name="mine"), LoraSettings(), 2, "causal-lm", 0)
    line = str(info.value)
    assert "\n" not in line and line.startswith("run config 'lora.target-modules' = 'auto': ")
    assert line.endswith("set lora.target-modules to the modules to adapt")


@pytest.mark.parametrize(
    ("family", "task", "message"),
    [
        (
            "distilbert",
            "causal-lm",
            "(distilbert) has no causal-lm model class in transformers; "
            "set model.task='classification'",
        ),
        (
            "bert",
            "causal-lm",
            "(bert) is an encoder: it sees the whole text at once and cannot learn the next "
            "token; set model.task='classification'",
        ),
    ],
)
def test_a_model_that_cannot_do_the_task_is_one_line(
    folders, data, family: str, task: str, message: str
) -> None:
    config = _run_config(folders(family), task, data)
    with pytest.raises(ConfigError) as info:
        loading("model.name", config.model.name, lambda: lora_model(config, fresh=True))
    assert str(info.value) == (
        f"run config 'model.name' = {config.model.name!r}: model {config.model.name!r} {message}"
    )


def test_fedtune_plan_counts_the_adapter_training_builds(folders, capsys) -> None:
    folder = folders("gpt2")
    assert main(["plan", str(folder), "--task", "causal-lm", "--memory-gb", "64"]) == 0
    assert " LoRA weights on c_attn (" in capsys.readouterr().out


def test_the_models_page_lists_what_auto_picks_for_each_architecture() -> None:
    page = (ROOT / "docs" / "models-and-data.md").read_text()
    by_targets: dict[str, list[str]] = {}
    for model_type, targets in known_targets().items():
        shown = f"`{targets}`" if isinstance(targets, str) else ", ".join(f"`{t}`" for t in targets)
        by_targets.setdefault(shown.replace("|", r"\|"), []).append(model_type)
    table = "\n".join(
        ["| `auto` adapts | for `model_type` |", "|---|---|"]
        + [f"| {shown} | {', '.join(sorted(types))} |" for shown, types in by_targets.items()]
    )
    assert table in page, f"docs/models-and-data.md should contain:\n{table}"
    assert "`fedtune plan`" in page
