"""Accuracy, macro-F1 and the confusion matrix of a classifier's predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def confusion_matrix(
    labels: Sequence[int], predictions: Sequence[int], classes: int
) -> torch.Tensor:
    """Counts of (true class, predicted class): row i is the examples of class i."""
    matrix = torch.zeros(classes, classes, dtype=torch.long)
    for true, predicted in zip(labels, predictions, strict=True):
        matrix[true, predicted] += 1
    return matrix


def macro_f1(matrix: torch.Tensor) -> float:
    """The unweighted mean of each class's F1 over the classes the examples hold or the model
    predicts (scikit-learn's ``f1_score(average="macro")``): a partition that holds two of eight
    classes is scored on what it holds, and a class predicted but never true counts 0."""
    hits = matrix.diag().double()
    predicted, true = matrix.sum(0).double(), matrix.sum(1).double()
    seen = (predicted + true) > 0
    if not bool(seen.any()):
        return 0.0
    return float((2 * hits[seen] / (predicted + true)[seen]).mean())


def accuracy(matrix: torch.Tensor) -> float:
    return float(matrix.diag().sum()) / max(int(matrix.sum()), 1)


def plot_confusion(matrix: torch.Tensor, names: Sequence[str], title: str, path: Path) -> Path:
    """The matrix as a picture: rows the true class, columns the predicted one, with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix.numpy(), cmap="Blues")
    ticks = range(len(names))
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = int(matrix.max()) or 1
    for i in ticks:
        for j in ticks:
            count = int(matrix[i, j])
            colour = "white" if count > peak / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
