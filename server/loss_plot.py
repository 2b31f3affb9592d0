"""A PNG of loss per round: training, clients' held-out and the server's test set."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

SERIES = (
    ("train_loss", "train (clients)"),
    ("held_out_loss", "held-out (clients)"),
    ("test_loss", "test (server)"),
)


def plot_losses(rounds: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Draw every loss series present in the round records; round 0 is the initial model."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in SERIES:
        points = [(r["round"], r[key]) for r in rounds if r.get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
