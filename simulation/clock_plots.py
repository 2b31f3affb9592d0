"""Pictures of a run on the simulated clock: the test metric against simulated hours, and one
round's timeline (each sampled device's download, compute and upload, and the deadline)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from simulation.clock import SECONDS_PER_HOUR  # noqa: E402

_FATES = {"kept": "tab:blue", "late": "tab:orange", "failed": "tab:red", "not needed": "tab:gray"}


def plot_test_against_hours(rounds: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Test loss (and accuracy, where there is one) at the end of each round, by simulated hour."""
    hours, elapsed = [], 0.0
    for record in rounds:
        elapsed += record.get("simulation", {}).get("duration_s", 0.0)
        hours.append(elapsed / SECONDS_PER_HOUR)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(hours, [r["test_loss"] for r in rounds], marker="o", label="test loss")
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("test loss")
    if all(r.get("test_accuracy") is not None for r in rounds):
        other = ax.twinx()
        other.plot(
            hours,
            [r["test_accuracy"] for r in rounds],
            marker="s",
            color="tab:green",
            label="test accuracy",
        )
        other.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_round_timeline(record: dict[str, Any], deadline: float, path: Path) -> Path:
    """One round's sampled devices as bars (download, compute, upload; failed ones up to their
    failure), coloured by fate, with the deadline as a line."""
    devices = sorted(record["simulation"]["devices"], key=lambda d: d["finish_s"])
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(devices) + 1.5))
    for row, device in enumerate(devices):
        colour = _FATES.get(device["status"], "black")
        if "download_s" in device:
            parts = (device["download_s"], device["compute_s"], device["upload_s"])
            ax.barh(row, parts[0], color=colour, alpha=0.35)
            ax.barh(row, parts[1], left=parts[0], color=colour)
            ax.barh(row, parts[2], left=parts[0] + parts[1], color=colour, alpha=0.35)
        else:
            ax.barh(row, device["finish_s"], color=colour, hatch="//", alpha=0.5)
    handles = [Patch(color=colour, label=fate) for fate, colour in _FATES.items()]
    if deadline:
        handles.append(ax.axvline(deadline, color="black", linestyle="--", label="deadline"))
    ax.set_yticks(range(len(devices)), [f"{d['partition_id']} ({d['profile']})" for d in devices])
    ax.set_xlabel("simulated seconds (light: download and upload; solid: compute)")
    ax.set_title(f"round {record['round']} on the simulated clock")
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
