"""The data section: which data set, its columns, how it is split across clients."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION

BUILTIN_DATASETS = {"chatterbot": TASK_CAUSAL_LM, "wordnet": TASK_CLASSIFICATION}


@dataclass(frozen=True)
class DataSettings:
    name: str = option(
        "chatterbot",
        "chatterbot (instruction pairs), wordnet (definition to category), "
        "or a path to your own .jsonl or .csv file.",
    )
    text_column: str = option("text", "Your file's column with the prompt or input text.")
    target_column: str = option("target", "Your file's column with the response (causal LM).")
    label_column: str = option("label", "Your file's column with the class (classification).")
    group_column: str = option("", "Your file's column for the natural partitioner.")
    partitioner: str = option(
        "natural",
        "How examples are split across clients: iid, dirichlet over labels or categories, "
        "or natural (one category per client).",
        choices=("iid", "dirichlet", "natural"),
    )
    dirichlet_alpha: float = option(0.5, "Concentration of the Dirichlet split.", above=0.0)
    test_fraction: float = option(
        0.1,
        "Share of all examples the server keeps as its global test set.",
        above=0.0,
        maximum=0.5,
    )
    held_out_fraction: float = option(
        0.2, "Share of each client's examples kept out of training.", above=0.0, maximum=0.5
    )
    num_classes: int = option(
        0, "wordnet only: keep the N largest categories (0: all 45).", minimum=0
    )
    max_per_class: int = option(
        0, "wordnet only: at most N examples per category (0: all).", minimum=0
    )
