"""The model section: which model, which task, how long an example may be."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION


@dataclass(frozen=True)
class ModelSettings:
    name: str = option(
        "smollm2-135m",
        "A preset (smollm2-135m, minilm-l6, tiny-llama, tiny-bert), a local folder or a hub id.",
    )
    task: str = option(
        "auto",
        "What the model does; auto takes it from the preset or the dataset.",
        choices=("auto", TASK_CAUSAL_LM, TASK_CLASSIFICATION),
    )
    max_length: int = option(96, "Tokens per example after truncation.", minimum=8)
