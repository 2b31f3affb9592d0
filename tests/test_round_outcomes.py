"""What a round and a run record about the nodes they asked: each kind of outcome counted apart
(rejected, declined, silent, unreachable, evaluated only), and time across resumes."""

from __future__ import annotations

import time

from server.round_outcomes import EVALUATED_ONLY, kind_of, round_counts, run_counts
from server.run_clock import RunClock

STATUSES = [
    "ok",
    "rejected: update norm 5e+04 above server.max-update-norm",
    "declined: budget spent",
    "no reply before server.round-timeout",
    "unreachable: node 7 is offline",
    EVALUATED_ONLY,
    "unreachable: node 9 is offline",
]


def test_each_status_is_counted_as_its_own_kind() -> None:
    assert [kind_of(s) for s in STATUSES] == [
        "ok",
        "rejected",
        "declined",
        "no_reply",
        "unreachable",
        "evaluated_only",
        "unreachable",
    ]
    verdicts = ["ok", "no reply before server.round-timeout", "unreachable: gone", "rejected: x"]
    counts = round_counts(STATUSES, verdicts)
    assert counts == {
        "clients_rejected": 1,
        "clients_declined": 1,
        "clients_no_reply": 1,
        "clients_unreachable": 2,
        "clients_evaluated_only": 1,
        "evaluations_lost": 2,
    }
    total = run_counts([{**counts, "evaluations_rejected": 1}, counts])
    assert total["replies_unreachable"] == 4 and total["replies_rejected"] == 2
    assert total["evaluations_lost"] == 4 and total["evaluations_rejected"] == 1


def test_a_resumed_run_counts_its_time_from_the_first_launch() -> None:
    first = RunClock(started_at=time.time() - 600.0)  # launched ten minutes ago
    first.launched -= 300.0  # and it has run for five of them
    saved = first.state()
    resumed = RunClock.resumed_from(saved)
    summary = resumed.summary()
    assert summary["resumes"] == 1
    assert 600.0 <= summary["wall_seconds"] < 601.0
    assert 300.0 <= summary["running_seconds"] < 301.0
    assert RunClock.resumed_from(resumed.state()).resumes == 2
