"""A fedsa-lora client's own B factors are kept per round on the node, so that a round run
again after a resume starts from what the uninterrupted round started from."""

from __future__ import annotations

from pathlib import Path

import torch

from federated.personal_factors import PersonalFactors


def _factors(tmp_path: Path, key: str = "ab" * 8) -> PersonalFactors:
    return PersonalFactors(tmp_path, key, (2, 5))


def test_a_round_starts_from_the_newest_factors_of_an_earlier_round(tmp_path: Path) -> None:
    store = _factors(tmp_path)
    assert store.before(1) == (None, {})
    store.save(2, {"b": torch.full((2,), 2.0)}, since=None)
    store.save(5, {"b": torch.full((2,), 5.0)}, since=2)
    since, factors = store.before(5)  # round 5 run again: it started from round 2's
    assert since == 2 and torch.equal(factors["b"], torch.full((2,), 2.0))
    assert store.before(6)[0] == 5
    store.save(7, {"b": torch.full((2,), 7.0)}, since=5)  # round 2's is no longer needed
    assert sorted(store._files()) == [5, 7]


def test_runs_and_partitions_keep_their_own_files(tmp_path: Path) -> None:
    _factors(tmp_path, "ab" * 8).save(1, {"b": torch.ones(1)}, since=None)
    assert _factors(tmp_path, "cd" * 8).before(2) == (None, {})
