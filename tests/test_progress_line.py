"""What the console shows of a run: each server line once, and each round's line with the time
the run has left."""

from __future__ import annotations

import logging

import pytest
from flwr.common.logger import console_handler

from server.progress import RoundTimes, duration
from server.round_record import round_line

RECORD = {
    "round": 2,
    "clients_sampled": 4,
    "clients_accepted": 4,
    "train_loss": 1.5,
    "held_out_loss": 1.25,
    "test_loss": 1.0,
    "bytes_up": 2_000_000,
    "bytes_down": 3_000_000,
    "round_seconds": 30.0,
}


def test_the_estimate_is_the_mean_round_time_times_the_rounds_left() -> None:
    times = RoundTimes([{"round": 0, "test_loss": 2.0}, {"round": 1, "round_seconds": 20.0}])
    times.add({"round": 2, "round_seconds": 40.0})
    assert times.left(rounds_left=3) == pytest.approx(90.0)  # (20 + 40) / 2 * 3
    assert times.left(rounds_left=0) is None  # the last round: nothing left to estimate
    assert RoundTimes([{"round": 0}]).left(5) is None  # no round timed yet
    # Client-level DP withholds a round's time: the run publishes no estimate.
    assert RoundTimes([{"round": 1, "test_loss": 1.0}]).left(5) is None


def test_the_round_line_ends_with_the_time_left() -> None:
    line = round_line(RECORD, rounds=10, left=8 * 30.0)
    assert line == (
        "[round 2/10] clients 4/4 | train loss 1.5000 | held-out loss 1.2500 | test loss "
        "1.0000 | up 2.00 MB down 3.00 MB | 30.0 s | about 4 min left"
    )
    assert round_line(RECORD, rounds=2).endswith("| 30.0 s")  # nothing left: no estimate


@pytest.mark.parametrize(
    ("seconds", "shown"), [(42.4, "42 s"), (89.0, "89 s"), (600.0, "10 min"), (9000.0, "2.5 h")]
)
def test_a_duration_reads_at_a_glance(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_a_server_line_is_printed_once_whatever_the_root_logger_prints() -> None:
    import server.app  # noqa: F401 - what the ServerApp's process imports, opacus among it

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    # opacus's import calls logging.basicConfig: in a process whose root logger had no
    # handler yet (every run's), the root logger prints to stderr from then on.
    root = Lines()
    logging.getLogger().addHandler(root)
    try:
        logging.getLogger("flwr").info("[round 1/2] clients 3/3")
    finally:
        logging.getLogger().removeHandler(root)
    assert root.lines == []
    assert console_handler in logging.getLogger("flwr").handlers  # Flower's own line, alone
