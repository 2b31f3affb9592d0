"""What a process needs to take part in a run: the corpus, its split, the model with LoRA.

Each piece is built once per process and cached by its (frozen, hashable) settings: a Ray actor
serves many simulated clients in turn, and reloading a model for each would dominate the round.
The cached model is shared, so every message overwrites all of its trainable tensors first.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from federated.config import ConfigError, DataSettings, LoraSettings, ModelSettings, RunConfig
from federated.data.chatterbot import load_chatterbot
from federated.data.corpus import Corpus, Example, evenly_spread
from federated.data.encode import encode_examples
from federated.data.files import load_table
from federated.data.partition import FederatedSplit, federated_split, global_test_indices
from federated.data.wordnet import load_wordnet
from federated.model.compute import resolve_device
from federated.model.local_model import LocalModel
from federated.model.lora import wrap_with_lora
from federated.model.lora_targets import lora_targets
from federated.model.numerics import PLAIN_FP32, Numerics
from federated.model.presets import load_base_model, load_tokenizer
from federated.model.verbalizer import (
    VerbalizedClassifier,
    class_prompt_template,
    label_token_ids,
    label_words,
)
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION

Encoded = list[dict[str, list[int]]]


@lru_cache(maxsize=2)
def load_corpus(data: DataSettings, task: str, seed: int) -> Corpus:
    """The whole data set named by ``data.name``."""
    if data.name == "chatterbot":
        return load_chatterbot()
    if data.name == "wordnet":
        return load_wordnet(
            categories=data.num_classes or None, max_per_class=data.max_per_class or None, seed=seed
        )
    return load_table(
        Path(data.name).expanduser(),
        task=task,
        text_column=data.text_column,
        target_column=data.target_column,
        label_column=data.label_column,
        group_column=data.group_column,
    )


def corpus_for(config: RunConfig) -> Corpus:
    return load_corpus(config.data, config.task, config.seed)


@lru_cache(maxsize=4)
def _split(data: DataSettings, task: str, seed: int, num_partitions: int) -> FederatedSplit:
    return federated_split(
        load_corpus(data, task, seed),
        num_partitions,
        data.partitioner,
        alpha=data.dirichlet_alpha,
        test_fraction=data.test_fraction,
        held_out_fraction=data.held_out_fraction,
        seed=seed,
    )


def client_indices(
    config: RunConfig, partition_id: int, num_partitions: int
) -> tuple[list[int], list[int]]:
    """(train, held-out) example indices of one client."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id {partition_id} is outside 0..{num_partitions - 1}")
    return _split(config.data, config.task, config.seed, num_partitions).clients[partition_id]


def server_test_indices(config: RunConfig) -> list[int]:
    """The server's global test set, drawn before partitioning: the same for any client count."""
    return global_test_indices(corpus_for(config), config.data.test_fraction, config.seed)


def num_labels(config: RunConfig) -> int | None:
    """The classifier's classes; None for a language model, without reading the data (a node
    with its own file need not hold the run's)."""
    if config.task != TASK_CLASSIFICATION:
        return None
    labels = corpus_for(config).label_names
    return len(labels) if labels else None


def label_tokens(config: RunConfig) -> tuple[int, ...] | None:
    """Classification posed as generation: each class's label-word token; else None."""
    if not config.verbalized:
        return None
    return _label_tokens(config.model, corpus_for(config).label_names or (), config.data.name)


@lru_cache(maxsize=2)
def _label_tokens(model: ModelSettings, names: tuple[str, ...], data_name: str) -> tuple[int, ...]:
    prompt = class_prompt_template(model.prompt, data_name)
    try:
        words = label_words(names, model.verbalizer)
        return tuple(label_token_ids(load_tokenizer(model.name), prompt, names, words))
    except ValueError as err:
        raise ConfigError(f"run config 'model.verbalizer' = {model.verbalizer!r}: {err}") from None


def class_prompt(config: RunConfig) -> str | None:
    """The prompt template of classification posed as generation; None otherwise."""
    if not config.verbalized:
        return None
    return class_prompt_template(config.model.prompt, config.data.name)


def numerics_of(config: RunConfig) -> Numerics:
    """How the run holds and computes its base model (precision, k bits, recomputation)."""
    return Numerics(
        config.train.precision, config.model.quantization, config.train.gradient_checkpointing
    )


def device_of(config: RunConfig) -> str:
    """The device this process computes on, resolved from ``train.device`` on this machine."""
    return resolve_device(config.train.device)


def base_model(
    model: ModelSettings,
    task: str,
    labels: int | None,
    seed: int,
    tokens: tuple[int, ...] | None,
    numerics: Numerics = PLAIN_FP32,
    device: str = "cpu",
) -> torch.nn.Module:
    """The pretrained model: for classification posed as generation (``tokens``, see
    `label_tokens`), the causal LM that scores those tokens."""
    if tokens is None:
        return load_base_model(model.name, task, labels, seed, numerics, device)
    lm = load_base_model(model.name, TASK_CAUSAL_LM, None, seed, numerics, device)
    return VerbalizedClassifier(lm, tokens)


def base_arguments(config: RunConfig) -> tuple:
    """What `base_model` builds the run's base model from, in this process."""
    return (
        config.model,
        config.task,
        num_labels(config),
        config.seed,
        label_tokens(config),
        numerics_of(config),
        device_of(config),
    )


@lru_cache(maxsize=2)
def _lora_model(
    lora: LoraSettings,
    rank: int,
    model: ModelSettings,
    task: str,
    labels: int | None,
    seed: int,
    tokens: tuple[int, ...] | None,
    numerics: Numerics,
    device: str,
) -> LocalModel:
    base = base_model(model, task, labels, seed, tokens, numerics, device)
    peft_model = wrapped(base, model, lora, rank, task, seed)
    return LocalModel.wrap(peft_model, load_tokenizer(model.name), rank)


def wrapped(
    base: PreTrainedModel,
    model: ModelSettings,
    lora: LoraSettings,
    rank: int,
    task: str,
    seed: int,
) -> PeftModel:
    """``base`` with the run's LoRA adapter at ``rank``, on the modules `lora_targets` picks."""
    try:
        return wrap_with_lora(
            base,
            task,
            rank=rank,
            alpha=lora.scale * rank,
            dropout=lora.dropout,
            target_modules=lora_targets(base, model.name, lora.targets),
            seed=seed,
        )
    except ValueError as err:  # targets missing, an embedding, or none for auto: the setting's
        key = f"run config 'lora.target-modules' = {lora.target_modules!r}"
        raise ConfigError(f"{key}: {err}") from None


def lora_model(config: RunConfig, rank: int | None = None, fresh: bool = False) -> LocalModel:
    """The base model wrapped with seeded LoRA factors of ``rank`` (default: lora.rank).

    Cached per process unless ``fresh`` (a model of its own, outside the cache); every rank keeps
    the scale alpha / lora.rank, so that the products of clients with different ranks can be
    compared and combined.
    """
    build = _lora_model.__wrapped__ if fresh else _lora_model
    rank = rank or config.lora.rank
    return build(config.lora, rank, *base_arguments(config))


def encode_indices(
    config: RunConfig, tokenizer: Any, indices: Sequence[int], limit: int = 0
) -> Encoded:
    """Tokenize the run's examples at ``indices``; with ``limit``, see `encode_records`."""
    examples = corpus_for(config).examples
    return encode_records(config, tokenizer, [examples[i] for i in indices], limit)


def encode_records(
    config: RunConfig, tokenizer: Any, examples: Sequence[Example], limit: int = 0
) -> Encoded:
    """Tokenize ``examples``; with ``limit``, an evenly spread subset of that many.

    Examples come in data order, which runs category by category: taking the first ``limit``
    would evaluate on the first categories only.
    """
    return encode_examples(
        evenly_spread(examples, limit),
        tokenizer,
        config.task,
        config.model.max_length,
        prompt=class_prompt(config),
    )
