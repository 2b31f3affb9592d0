"""What happened to each node a round asked, counted by kind, for the round and the run.

A node's training status says how its reply was taken: ``ok``, ``rejected: why`` (it answered,
and the answer was unsound), ``declined: why`` (it answered that it would not train: a spent
privacy budget), ``no reply before server.round-timeout`` (asked, silent), ``unreachable: why``
(the SuperLink said the node was gone), or ``evaluated only`` (not asked to train this round,
but asked to evaluate: a node that joined or came back mid-round). Evaluations are lost when a
node asked to evaluate did not answer or could not be reached.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from federated.results import OUTCOME_KINDS

EVALUATED_ONLY = "evaluated only"


def kind_of(status: str) -> str:
    """``ok``, one of ``OUTCOME_KINDS``, or ``other`` (a status this module does not know)."""
    if status == "ok":
        return "ok"
    if status == EVALUATED_ONLY:
        return "evaluated_only"
    for prefix, kind in (
        ("rejected", "rejected"),
        ("declined", "declined"),
        ("no reply", "no_reply"),
        ("unreachable", "unreachable"),
    ):
        if status.startswith(prefix):
            return kind
    return "other"


def round_counts(statuses: Iterable[str], eval_verdicts: Iterable[str]) -> dict[str, int]:
    """``clients_<kind>`` for each kind, and ``evaluations_lost``."""
    counts = Counter(kind_of(s) for s in statuses)
    lost = sum(kind_of(v) in ("no_reply", "unreachable") for v in eval_verdicts)
    return {**{f"clients_{kind}": counts[kind] for kind in OUTCOME_KINDS}, "evaluations_lost": lost}


def run_counts(rounds: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The rounds' counts summed (``replies_<kind>`` and ``evaluations_lost``/``_rejected``)."""
    rounds = list(rounds)
    totals = {
        f"replies_{kind}": sum(r.get(f"clients_{kind}", 0) for r in rounds)
        for kind in OUTCOME_KINDS
    }
    for key in ("evaluations_lost", "evaluations_rejected"):
        totals[key] = sum(r.get(key, 0) for r in rounds)
    return totals
