"""The user's own data: a ``.jsonl`` file (one JSON object a line) or a ``.csv`` with a header."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from federated.data.corpus import Corpus, Example
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION, TASKS

TABLE_SUFFIXES = (".jsonl", ".csv")
# An example is cut to the model's context (a few thousand tokens) anyway; a line a thousand
# times longer is a broken export, and reading it whole could take more memory than the device
# has. csv's own bound on one value is 128 KiB (``csv.field_size_limit``).
MAX_LINE_BYTES = 1 << 20


def load_table(
    path: Path,
    *,
    task: str,
    text_column: str,
    target_column: str = "",
    label_column: str = "",
    group_column: str = "",
    classes: tuple[str, ...] = (),
) -> Corpus:
    """Load a ``.jsonl`` or ``.csv`` file into a corpus.

    Parameters
    ----------
    path
        The file; its extension picks the format.
    task
        `TASK_CAUSAL_LM` (needs `target_column`) or `TASK_CLASSIFICATION` (needs `label_column`).
    text_column
        The column with the prompt or the input text.
    target_column
        The column with the response, for causal LM.
    label_column
        The column with the class, for classification. If every value is a non-negative integer
        (or, in a CSV, a string of one) it is used as the index and ``label_names`` are
        ``"0" .. "max"``; otherwise the values are read as text, and ``label_names`` are the
        distinct values sorted, which the labels index.
    group_column
        An optional column for the natural partitioner.
    classes
        For one node's own file in a run whose classes are set elsewhere: those class names.
        Each label must be one of them (by name; integer labels are names too, "0", "1", ...),
        and any number of them may be missing from the file.

    Returns
    -------
    Corpus
        Named after the file, examples in file order.

    Raises
    ------
    ValueError
        With one line naming the file and, where it applies, the column or the line: for an
        unknown extension, a task without its column, an empty file, a missing column, a row
        without a value, or a line that is not a JSON object.
    """
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(
            f"{path}: unknown extension {path.suffix!r}; use one of {', '.join(TABLE_SUFFIXES)}"
        )
    if task not in TASKS:
        raise ValueError(f"{path}: task {task!r} is not one of {', '.join(TASKS)}")
    if task == TASK_CAUSAL_LM and not target_column:
        raise ValueError(f"{path}: a causal-lm table needs target_column (the response)")
    if task == TASK_CLASSIFICATION and not label_column:
        raise ValueError(f"{path}: a classification table needs label_column (the class)")

    columns = {"text": text_column}
    if task == TASK_CAUSAL_LM:
        columns["target"] = target_column
    else:
        columns["label"] = label_column
    if group_column:
        columns["group"] = group_column

    reader = _read_csv if path.suffix.lower() == ".csv" else _read_jsonl
    rows: list[tuple[int, dict[str, Any]]] = []
    for line_number, row in reader(path, list(columns.values())):
        values = {}
        for field, column in columns.items():
            value = row.get(column)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise ValueError(f"{path}, line {line_number}: no value in column {column!r}")
            values[field] = value
        rows.append((line_number, values))
    if not rows:
        raise ValueError(f"{path}: the file has no rows")

    label_names: tuple[str, ...] = ()
    labels = [-1] * len(rows)
    if task == TASK_CLASSIFICATION and classes:
        labels, label_names = _labels_among(path, label_column, rows, classes), classes
    elif task == TASK_CLASSIFICATION:
        labels, label_names = _labels([values["label"] for _, values in rows])
        _check_classes(path, label_column, labels, label_names)
    examples = tuple(
        Example(
            text=str(values["text"]),
            target=str(values.get("target", "")),
            label=label,
            group=str(values.get("group", "")),
        )
        for (_, values), label in zip(rows, labels, strict=True)
    )
    return Corpus(name=path.stem, task=task, examples=examples, label_names=label_names)


def _text_lines(path: Path) -> Iterator[str]:
    """The file's lines as text, ends kept; a byte that is not UTF-8 is reported with its line.

    Each line is decoded on its own, so the error names the line it is on (a text-mode file
    decodes in chunks, ahead of the line being read). A leading byte-order mark, which
    spreadsheets write, is dropped: it would rename the first column.
    """
    with path.open("rb") as handle:
        for line_number, raw in enumerate(
            iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), start=1
        ):
            if len(raw) > MAX_LINE_BYTES:
                raise ValueError(
                    f"{path}, line {line_number}: longer than {MAX_LINE_BYTES >> 20} MiB; an "
                    "example is cut to the model's context, so split or drop this line"
                )
            try:
                yield raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{path}, line {line_number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at "
                    f"position {err.start + 1}); save the file as UTF-8"
                ) from None


def _read_jsonl(path: Path, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; checks the columns on the first one."""
    seen_any = False
    for line_number, line in enumerate(_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {line_number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}, line {line_number}: expected a JSON object")
        if not seen_any:
            # Columns are checked on the first row: a JSONL file has no header, and a later
            # row that lacks a key is reported as a missing value on its own line.
            _check_columns(path, columns, list(row))
            seen_any = True
        yield line_number, row
    if not seen_any:
        raise ValueError(f"{path}: the file is empty")


def _read_csv(path: Path, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for every data row, numbered as in an editor (the header is line 1)."""
    reader = csv.reader(_text_lines(path))
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path}: the file is empty")
    _check_columns(path, columns, header)
    first_line = reader.line_num + 1
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as err:  # a value past csv's field size limit, or a stray NUL byte
            raise ValueError(f"{path}, line {first_line}: {err}") from None
        if cells is None:
            return
        # line_num counts physical lines, so a quoted value spanning lines and skipped blank
        # lines still leave the next row's own first line here.
        if cells:
            # A short row lacks its last keys and is reported as a missing value.
            yield first_line, dict(zip(header, cells, strict=False))
        first_line = reader.line_num + 1


def _check_columns(path: Path, wanted: list[str], present: list[str]) -> None:
    for column in wanted:
        if column not in present:
            listed = ", ".join(map(repr, present))
            raise ValueError(f"{path}: no column {column!r}; the file has columns {listed}")


def _labels(values: list[Any]) -> tuple[list[int], tuple[str, ...]]:
    """Class indices and class names from a label column, integers or text."""
    integers = [_as_index(value) for value in values]
    if all(index is not None for index in integers):
        count = max(integers) + 1  # type: ignore[type-var]
        return integers, tuple(str(i) for i in range(count))  # type: ignore[return-value]
    names = sorted({str(value).strip() for value in values})
    index_of = {name: i for i, name in enumerate(names)}
    return [index_of[str(value).strip()] for value in values], tuple(names)


def _labels_among(
    path: Path, column: str, rows: list[tuple[int, dict[str, Any]]], classes: tuple[str, ...]
) -> list[int]:
    """Each row's label as an index into ``classes``; a label outside them names its line."""
    index_of = {name: i for i, name in enumerate(classes)}
    labels = []
    for line_number, values in rows:
        name = str(values["label"]).strip()
        if name not in index_of:
            shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise ValueError(
                f"{path}, line {line_number}: {column} {name!r} is not one of the run's "
                f"{len(classes)} classes ({shown})"
            )
        labels.append(index_of[name])
    return labels


# Integer labels are class indices, so their largest value sets the classifier's width: one
# stray large number would build a head with that many outputs (a label of 1,000,000 made
# 260 MB messages). More classes than this beyond the ones present is taken for such a value.
_UNUSED_CLASSES_ALLOWED = 100


def _check_classes(path: Path, column: str, labels: list[int], names: tuple[str, ...]) -> None:
    present = len(set(labels))
    if present < 2:
        raise ValueError(
            f"{path}: column {column!r} holds a single class ({names[labels[0]]!r}); a "
            "classifier needs two or more"
        )
    if len(names) > 2 * present + _UNUSED_CLASSES_ALLOWED:
        raise ValueError(
            f"{path}: column {column!r} has integer labels up to {len(names) - 1} but only "
            f"{present} distinct ones, which would make a {len(names)}-class head; number the "
            f"classes 0..{present - 1} or write them as names"
        )


def _as_index(value: Any) -> int | None:
    """The value as a non-negative class index, or None if it is not one."""
    if isinstance(value, bool):  # True is an int in Python, but not a class index
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None
