"""The model section: which model, which task, how long an example may be."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option
from federated.numeric_names import QUANTIZATIONS
from federated.tasks import (
    TASK_CAUSAL_LM,
    TASK_CLASSIFICATION,
    TASK_CLASSIFICATION_AS_GENERATION,
)


@dataclass(frozen=True)
class ModelSettings:
    name: str = option(
        "smollm2-135m",
        "A preset (smollm2-135m, minilm-l6, tiny-llama, tiny-bert), a local folder or a hub id.",
    )
    task: str = option(
        "auto",
        "What the model does; auto takes it from the preset or the dataset. "
        "classification-as-generation: a causal LM classifies by the likelihood of each class's "
        "label word after model.prompt.",
        choices=("auto", TASK_CAUSAL_LM, TASK_CLASSIFICATION, TASK_CLASSIFICATION_AS_GENERATION),
    )
    prompt: str = option(
        "",
        "classification-as-generation: the question, with {text} where the example goes, sent as "
        "the chat's user message; empty: a built-in one for the data set.",
    )
    verbalizer: str = option(
        "",
        "classification-as-generation: label=word pairs, comma-separated; a class not named takes "
        "a built-in word (WordNet's) or its label's last dotted part. Words must begin with "
        "different tokens.",
    )
    max_length: int = option(96, "Tokens per example after truncation.", minimum=8)
    quantization: str = option(
        "none",
        "The frozen base linear layers in k bits through bitsandbytes: none, 8bit (LLM.int8) or "
        "4bit (NF4 with double quantization), prepared as peft prepares k-bit models; they "
        "compute in train.precision. LoRA factors stay float32.",
        choices=QUANTIZATIONS,
    )
