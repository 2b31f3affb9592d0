"""The in-memory form of every data set: a named, task-tagged tuple of examples.

Loaders (`chatterbot`, `wordnet`, `files`) produce a `Corpus`; the partitioners and the encoder
consume one. Examples are addressed by their index in `Corpus.examples`, so a split is just lists
of ints and never copies text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

# The task names have one home, beside the model presets; re-exported here for the loaders.
from federated.tasks import TASK_CLASSIFICATION, TASKS

T = TypeVar("T")


def evenly_spread(items: Sequence[T], limit: int) -> list[T]:
    """At most ``limit`` of ``items`` (0: all), evenly spread: data sets come category by
    category, and the first ``limit`` would cover the first categories only."""
    if not limit or len(items) <= limit:
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]


@dataclass(frozen=True)
class Example:
    """One training example.

    Attributes
    ----------
    text
        The prompt (instruction tuning) or the input text (classification).
    target
        The response for instruction tuning; empty for classification.
    label
        The class index for classification; -1 otherwise.
    group
        The natural partition key (a chatterbot category, a WordNet lexicographer file, ...).
    """

    text: str
    target: str = ""
    label: int = -1
    group: str = ""


@dataclass(frozen=True)
class Corpus:
    """A whole data set, before any split.

    Attributes
    ----------
    name
        A short name for logs and results (``chatterbot``, ``wordnet``, a file name).
    task
        `TASK_CAUSAL_LM` or `TASK_CLASSIFICATION`.
    examples
        Every example, in a deterministic order.
    label_names
        For classification, the name of each class index; empty otherwise.
    """

    name: str
    task: str
    examples: tuple[Example, ...]
    label_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"corpus {self.name!r}: task {self.task!r} is not one of {TASKS}")

    def __len__(self) -> int:
        return len(self.examples)

    def class_keys(self) -> list[str]:
        """The key each example is stratified and Dirichlet-partitioned by.

        Returns
        -------
        list[str]
            The label (as a string) for classification, the group for causal LM: an
            instruction-tuning corpus has no label, and its categories are what differ
            between users.
        """
        if self.task == TASK_CLASSIFICATION:
            return [str(example.label) for example in self.examples]
        return [example.group for example in self.examples]
