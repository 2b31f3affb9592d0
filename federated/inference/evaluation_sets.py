"""The examples ``fedtune evaluate`` scores: the run's own test set and each partition's
held-out split, or a file's examples and each of its groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from federated.config import RunConfig
from federated.data.corpus import Example, evenly_spread
from federated.data.files import load_table
from federated.inference import BUILT_IN
from federated.inference.run_folder import TrainedRun
from federated.model.workspace import client_indices, corpus_for, server_test_indices


@dataclass(frozen=True)
class EvaluationSet:
    """A named set of examples: ``all``, or one partition's or group's."""

    name: str
    examples: tuple[Example, ...]
    partition: int | None = None  # a partition's held-out split: its personal factors apply


def _spread(examples: Sequence[Example], limit: int) -> tuple[Example, ...]:
    return tuple(evenly_spread(examples, limit))


def class_names(config: RunConfig) -> tuple[str, ...]:
    """The run's classes, in label order; none for a causal LM."""
    return corpus_for(config).label_names


def evaluation_sets(
    run: TrainedRun, data: str, *, per_partition: bool, max_examples: int
) -> tuple[str, list[EvaluationSet]]:
    """What the data is (for the report) and its sets: ``all`` first, then each partition's
    held-out split (the run's data) or each group (a file), when ``per_partition``."""
    config = run.config
    if data == BUILT_IN:
        corpus = corpus_for(config).examples
        what = f"the run's test set ({config.data.name}; no client trained on it)"
        sets = [
            EvaluationSet(
                "all", _spread([corpus[i] for i in server_test_indices(config)], max_examples)
            )
        ]
        if per_partition:
            if not run.num_partitions:
                raise ValueError(
                    f"{run.folder}: the checkpoint does not say how many partitions the run had"
                )
            for p in range(run.num_partitions):
                held_out = [corpus[i] for i in client_indices(config, p, run.num_partitions)[1]]
                sets.append(EvaluationSet(f"partition {p}", _spread(held_out, max_examples), p))
        return what, sets
    path = Path(data).expanduser()
    if not path.is_file():
        raise ValueError(f"--data {data}: no such file (or '{BUILT_IN}' for the run's test set)")
    d = config.data
    table = load_table(
        path,
        task=config.task,
        text_column=d.text_column,
        target_column=d.target_column,
        label_column=d.label_column,
        group_column=d.group_column,
        classes=class_names(config),
    )
    sets = [EvaluationSet("all", _spread(table.examples, max_examples))]
    if per_partition:
        groups = sorted({e.group for e in table.examples})
        if groups == [""]:
            raise ValueError(
                f"--per-partition: {path} has no '{d.group_column or 'group'}' column to group by"
            )
        for group in groups:
            members = [e for e in table.examples if e.group == group]
            sets.append(EvaluationSet(f"group {group}", _spread(members, max_examples)))
    return str(path), sets
