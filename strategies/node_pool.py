"""The nodes a round may ask, as the server knows them when a strategy samples.

A strategy is built before any node has said which partition it holds, and the device simulator
is set up only once the nodes' number is known; so what sampling must know of the nodes reaches
the strategy with each round's call, as Flower's ``Grid`` brings it the connected nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class NodePool:
    """The nodes that said which partition they hold, and which of them may train in a round.

    Parameters
    ----------
    partition_of
        node ID -> partition of the nodes that may be sampled (it grows as nodes join); others
        are never drawn.
    can_train
        The device simulator's say: whether a partition's device can train in a round (its plan
        fits and it is online); None without the simulator, when every known node can.
    over_selection
        How many more clients to draw for training than a round needs (the simulator keeps
        the first to finish).
    """

    partition_of: Mapping[int, int]
    can_train: Callable[[int, int], bool] | None = None
    over_selection: float = 1.0

    def ordered(self, nodes: Iterable[int]) -> list[int]:
        """The known ones of ``nodes``, by partition."""
        return sorted((n for n in nodes if n in self.partition_of), key=self.partition_of.get)

    def available(self, kind: str, server_round: int, nodes: Iterable[int]) -> list[int]:
        """The known ones of ``nodes`` that may train this round (all of them for evaluation),
        by partition."""
        known = self.ordered(nodes)
        if kind != "train" or self.can_train is None:
            return known
        return [n for n in known if self.can_train(self.partition_of[n], server_round)]
