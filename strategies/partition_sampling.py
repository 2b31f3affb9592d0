"""Clients drawn by partition from a generator seeded by the run seed, so that the same seed
picks the same clients launch after launch (node IDs differ each launch; partitions do not)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping


class PartitionSampler:
    """Samples nodes ordered by their partition, from ``Random(seed, kind, round, draw)``.

    Parameters
    ----------
    seed
        The run's seed.
    partition_of
        node ID -> partition of the nodes that may be sampled; others are never drawn.
    """

    def __init__(self, seed: int, partition_of: Mapping[int, int]) -> None:
        self.seed = seed
        self.partition_of = partition_of
        self._draws: Counter[tuple[str, int]] = Counter()
        # The device simulator's say: whether a partition's device can train this round, and
        # how many more clients to draw than a round needs (over-selection).
        self.eligible: Callable[[int, int], bool] | None = None
        self.over_selection = 1.0

    def ordered(self, nodes: Iterable[int]) -> list[int]:
        """The known ones of ``nodes``, by partition."""
        return sorted((n for n in nodes if n in self.partition_of), key=self.partition_of.get)

    def available(self, kind: str, server_round: int, nodes: Iterable[int]) -> list[int]:
        """The known ones of ``nodes`` that may train this round (all of them for evaluation),
        by partition."""
        known = self.ordered(nodes)
        if kind != "train" or self.eligible is None:
            return known
        return [n for n in known if self.eligible(self.partition_of[n], server_round)]

    def sample(
        self, kind: str, server_round: int, connected: Iterable[int], size: int
    ) -> list[int]:
        """``size`` of the known connected nodes (all of them when fewer), in partition order. A
        round tried again draws afresh, so a retry does not repeat the same clients."""
        known = self.available(kind, server_round, connected)
        if kind == "train" and self.eligible is not None:
            size = math.ceil(size * self.over_selection)
        draw = self._draws[(kind, server_round)]
        self._draws[(kind, server_round)] += 1
        rng = random.Random(f"{self.seed}/{kind}/{server_round}/{draw}")
        return self.ordered(rng.sample(known, min(size, len(known))))
