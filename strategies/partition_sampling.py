"""Clients drawn by partition from a generator seeded by the run seed, so that the same seed
picks the same clients launch after launch (node IDs differ each launch; partitions do not)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable

from strategies.node_pool import NodePool


class PartitionSampler:
    """Samples nodes ordered by their partition, from ``Random(seed, kind, round, draw)``.

    Parameters
    ----------
    seed
        The run's seed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._draws: Counter[tuple[str, int]] = Counter()

    def sample(
        self, kind: str, server_round: int, connected: Iterable[int], size: int, pool: NodePool
    ) -> list[int]:
        """``size`` of the connected nodes that ``pool`` knows and finds available (all of them
        when fewer; for training, over-selected), in partition order. A round tried again draws
        afresh, so a retry does not repeat the same clients."""
        known = pool.available(kind, server_round, connected)
        if kind == "train":
            size = math.ceil(size * pool.over_selection)
        draw = self._draws[(kind, server_round)]
        self._draws[(kind, server_round)] += 1
        rng = random.Random(f"{self.seed}/{kind}/{server_round}/{draw}")
        return pool.ordered(rng.sample(known, min(size, len(known))))
