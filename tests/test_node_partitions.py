"""How the server judges the nodes' claims of which partition they hold: the most common count
fixes the federation's, a tie cannot be won by a larger count, no claim above the data's size
counts, and a partition is held by one node."""

from __future__ import annotations

from server.node_partitions import settle_claims


def test_the_most_common_count_wins_and_the_others_are_refused() -> None:
    claims = {1: (0, 3), 2: (1, 3), 3: (2, 4)}
    count, accepted, refused = settle_claims(claims, None, {}, most=100)
    assert count == 3 and accepted == {1: 0, 2: 1}
    assert refused == {3: "claims 4 partitions, the federation has 3"}


def test_a_huge_count_cannot_win_by_a_tie_or_at_all() -> None:
    count, accepted, _ = settle_claims({1: (0, 2), 2: (1, 10**9)}, None, {}, most=500)
    assert count == 2 and accepted == {1: 0}
    count, _, refused = settle_claims({1: (0, 4), 2: (1, 5)}, None, {}, most=500)
    assert count == 4 and 2 in refused  # a tie goes to the smaller number
    alone, accepted, refused = settle_claims({7: (3, 10**9)}, None, {}, most=500)
    assert alone is None and accepted == {}
    assert refused == {7: "claims 1000000000 partitions; the data has 500 examples"}


def test_a_partition_already_held_is_refused() -> None:
    _, accepted, refused = settle_claims({5: (0, 2), 6: (1, 2)}, 2, {4: 0}, most=10)
    assert accepted == {6: 1} and refused == {5: "claims partition 0, which node 4 holds"}
