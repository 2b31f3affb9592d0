"""Pictures of a run on the simulated clock: the test metric against simulated time, and one
round's timeline (each sampled device's download, compute and upload, and the deadline). Each
axis spans what it draws: a run of seconds is drawn in seconds, and a deadline far beyond
every device's finish stays off the round's axis."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no screen on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from simulation.clock import SECONDS_PER_HOUR  # noqa: E402

_FATES = {"kept": "tab:blue", "late": "tab:orange", "failed": "tab:red", "not needed": "tab:gray"}
# A deadline further than this many times the last bar's end is drawn outside the axis: scaled
# to it, every bar would be a sliver at the left.
_DEADLINE_REACH = 1.5
_MARGIN = 1.05
# The simulated time of a run, in the largest unit it spans at least two of.
_UNITS = (("hours", SECONDS_PER_HOUR), ("minutes", 60.0), ("seconds", 1.0))


def time_unit(seconds: float) -> tuple[str, float]:
    """The unit to draw ``seconds`` of simulated time in, and its length in seconds."""
    return next(((n, s) for n, s in _UNITS if seconds >= 2 * s), _UNITS[-1])


def timeline_end(finishes: Sequence[float], deadline: float) -> float:
    """The right end of a round's timeline: just past its last bar, and past its deadline
    where the deadline is near enough to be seen beside the bars."""
    last = max(finishes, default=0.0)
    if deadline and deadline <= _DEADLINE_REACH * last:
        last = max(last, deadline)
    return _MARGIN * (last or deadline or 1.0)


def metric_against_time_figure(rounds: Sequence[dict[str, Any]], title: str) -> Figure:
    """Test loss (and accuracy, where there is one) at the end of each round, against the
    simulated time since the run's start."""
    ends, elapsed = [], 0.0
    for record in rounds:
        elapsed += record.get("simulation", {}).get("duration_s", 0.0)
        ends.append(elapsed)
    unit, length = time_unit(elapsed)
    times = [t / length for t in ends]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(times, [r["test_loss"] for r in rounds], marker="o", label="test loss")
    ax.set_xlabel(f"simulated {unit}")
    ax.set_ylabel("test loss")
    if all(r.get("test_accuracy") is not None for r in rounds):
        other = ax.twinx()
        other.plot(
            times,
            [r["test_accuracy"] for r in rounds],
            marker="s",
            color="tab:green",
            label="test accuracy",
        )
        other.set_ylabel("test accuracy")
    ax.set_xlim(0, _MARGIN * max(times, default=0.0) or 1.0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def plot_test_against_hours(rounds: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """``metric_against_time_figure`` saved at ``path``."""
    return _save(metric_against_time_figure(rounds, title), path)


def round_timeline_figure(record: dict[str, Any], deadline: float) -> Figure:
    """One round's sampled devices as bars (download, compute, upload; failed ones up to their
    failure), coloured by fate, and the deadline as a line; the axis spans the bars."""
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
    end = timeline_end([d["finish_s"] for d in devices], deadline)
    if deadline:
        label = "deadline" if deadline <= end else f"deadline at {deadline:g} s, off the axis"
        handles.append(ax.axvline(deadline, color="black", linestyle="--", label=label))
    ax.set_xlim(0, end)  # after the deadline's line, which would stretch the axis to it
    ax.set_yticks(range(len(devices)), [f"{d['partition_id']} ({d['profile']})" for d in devices])
    ax.set_xlabel("simulated seconds (light: download and upload; solid: compute)")
    ax.set_title(f"round {record['round']} on the simulated clock")
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    return fig


def plot_round_timeline(record: dict[str, Any], deadline: float, path: Path) -> Path:
    """``round_timeline_figure`` saved at ``path``."""
    return _save(round_timeline_figure(record, deadline), path)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
