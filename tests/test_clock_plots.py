"""The simulated clock's pictures span what they draw: a round's timeline ends just past its last
device and reaches a deadline only where it is near, and a run of seconds is drawn in seconds."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from simulation.clock_plots import metric_against_time_figure, round_timeline_figure


def _round(finishes: list[float]) -> dict:
    devices = [
        {
            "partition_id": i,
            "profile": "pi5",
            "status": "kept",
            "finish_s": t,
            "download_s": 0.1,
            "compute_s": t - 0.2,
            "upload_s": 0.1,
        }
        for i, t in enumerate(finishes)
    ]
    return {"round": 1, "simulation": {"devices": devices}}


def _deadline_line(ax: plt.Axes) -> float:
    (line,) = [drawn for drawn in ax.get_lines() if drawn.get_linestyle() == "--"]
    return float(line.get_xdata()[0])


def test_a_far_deadline_is_drawn_but_the_axis_ends_just_past_the_last_device() -> None:
    fig = round_timeline_figure(_round([2.0, 5.0, 8.6]), deadline=600.0)
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, 8.6 * 1.05))
    assert _deadline_line(ax) == 600.0
    assert "off the axis" in ax.get_legend().get_texts()[-1].get_text()
    plt.close(fig)


@pytest.mark.parametrize("deadline", [5.0, 12.0])
def test_a_deadline_among_or_near_the_devices_is_on_the_axis(deadline: float) -> None:
    fig = round_timeline_figure(_round([2.0, 5.0, 8.6]), deadline=deadline)
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, max(8.6, deadline) * 1.05))
    assert _deadline_line(ax) == deadline
    assert ax.get_legend().get_texts()[-1].get_text() == "deadline"
    plt.close(fig)


def test_a_round_without_a_deadline_spans_its_devices() -> None:
    fig = round_timeline_figure(_round([0.05, 0.2]), deadline=0.0)
    assert fig.axes[0].get_xlim() == pytest.approx((0.0, 0.21))
    plt.close(fig)


@pytest.mark.parametrize(
    ("durations", "unit", "end"),
    [
        ([3.0, 4.0, 5.0], "seconds", 12.0),
        ([300.0, 600.0], "minutes", 15.0),
        ([3600.0, 7200.0, 3600.0], "hours", 4.0),
    ],
)
def test_the_test_metric_is_drawn_in_the_unit_the_run_spans(durations, unit, end) -> None:
    rounds = [
        {"simulation": {"duration_s": d}, "test_loss": 1.0 / (i + 1), "test_accuracy": None}
        for i, d in enumerate(durations)
    ]
    fig = metric_against_time_figure(rounds, "run")
    ax = fig.axes[0]
    assert ax.get_xlabel() == f"simulated {unit}"
    assert ax.get_xlim() == pytest.approx((0.0, end * 1.05))
    assert list(ax.get_lines()[0].get_xdata())[-1] == pytest.approx(end)
    plt.close(fig)
