"""The records a node trains and evaluates on: its partition of the run's data set, or its own
``data-file`` (node config), read with the run's column names and split into training and
held-out records as a partition is."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from client.node_config import NodeSettings
from federated.config import DataSettings, RunConfig
from federated.data.corpus import Corpus, Example
from federated.data.files import load_table
from federated.data.partition import split_fraction
from federated.model.workspace import client_indices, corpus_for, num_labels
from federated.privacy.canaries import client_canaries
from federated.tasks import TASK_CLASSIFICATION

Records = tuple[list[Example], list[Example]]


@lru_cache(maxsize=2)
def _table(
    path: Path, stamp: tuple[int, int], data: DataSettings, task: str, classes: tuple[str, ...]
) -> Corpus:
    """The file as it was at ``stamp`` (its change time and size): an edited file is read anew."""
    return load_table(
        path,
        task=task,
        text_column=data.text_column,
        target_column=data.target_column,
        label_column=data.label_column,
        classes=classes,
    )


def _own_file(config: RunConfig, node: NodeSettings) -> Corpus:
    path = node.data_file
    assert path is not None
    where = f"node config 'data-file' = '{path}'"
    try:
        stat = path.stat()
    except OSError as err:
        raise ValueError(f"{where}: {err.strerror or err}") from None
    if not path.is_file():
        raise ValueError(f"{where}: not a file")
    # A classifier's head has the run's classes; the node's labels must be among them.
    classes = corpus_for(config).label_names if config.task == TASK_CLASSIFICATION else ()
    try:
        return _table(path, (stat.st_mtime_ns, stat.st_size), config.data, config.task, classes)
    except OSError as err:
        raise ValueError(f"{where}: {err.strerror or err}") from None


def node_records(config: RunConfig, node: NodeSettings) -> Records:
    """(training, held-out) records of ``node``, its training records with the audit's canaries
    that it was dealt. A file it cannot read raises ValueError with one line naming it, which
    reaches the server as this node's error reply."""
    train, held_out = _data_records(config, node)
    if config.audit.canaries:
        train += client_canaries(
            config, node.partition_id, node.num_partitions, num_labels(config) or 0
        )
    return train, held_out


def _data_records(config: RunConfig, node: NodeSettings) -> Records:
    if node.data_file is None:
        examples = corpus_for(config).examples
        train, held_out = client_indices(config, node.partition_id, node.num_partitions)
        return [examples[i] for i in train], [examples[i] for i in held_out]
    corpus = _own_file(config, node)
    train, held_out = split_fraction(
        range(len(corpus.examples)), config.data.held_out_fraction, config.seed
    )
    return [corpus.examples[i] for i in train], [corpus.examples[i] for i in held_out]
