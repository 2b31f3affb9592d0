"""Splitting a corpus across simulated clients: a global test set, then one partition a client.

Every function returns sorted lists of example indices and draws its randomness from a numpy
generator seeded explicitly, so the same seed gives the same split on every machine and the
global random state is never touched.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from federated.data.corpus import Corpus

PARTITIONERS = ("iid", "dirichlet", "natural")

# A Dirichlet draw that leaves some partition nearly empty is redrawn; with this many tries a
# feasible setting virtually always succeeds, and an infeasible one fails in well under a second.
DIRICHLET_MAX_TRIES = 1000

# Independent streams under one seed (numpy's SeedSequence takes the pair as entropy), so the test
# draw, the partition and each client's held-out split do not reuse each other's random numbers.
_TEST_STREAM = 1
_HELD_OUT_STREAM = 2


def partition_indices(
    corpus: Corpus,
    num_partitions: int,
    method: str,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    candidates: Sequence[int] | None = None,
    min_size: int = 2,
) -> list[list[int]]:
    """Split a corpus' examples into disjoint partitions, one per client.

    Parameters
    ----------
    corpus
        The examples; classification splits by ``label``, causal LM by ``group``.
    num_partitions
        How many partitions (clients).
    method
        ``iid``: a shuffled split into sizes that differ by at most one. ``dirichlet``: for each
        class, shares over the partitions drawn from Dir(alpha) (Hsu et al. 2019, as in Flower
        Datasets' `DirichletPartitioner`), redrawn until every partition has `min_size`
        examples. ``natural``: whole groups; with more groups than partitions, the largest
        group not yet placed goes to the smallest partition.
    alpha
        Dirichlet concentration: small is skewed (each client sees few classes), large is close
        to iid.
    seed
        Seed of the shuffles and draws.
    candidates
        Only split these indices (e.g. what the global test set left); None means all.
    min_size
        The fewest examples a Dirichlet partition may have.

    Returns
    -------
    list[list[int]]
        `num_partitions` sorted, disjoint lists whose union is the pool.

    Raises
    ------
    ValueError
        For an unknown method, a pool too small to split, fewer groups than partitions
        (natural), or no acceptable Dirichlet draw.
    """
    if method not in PARTITIONERS:
        raise ValueError(f"partitioner {method!r} is unknown; use one of {', '.join(PARTITIONERS)}")
    if num_partitions < 1:
        raise ValueError(f"num_partitions = {num_partitions}: must be at least 1")
    pool = _pool(corpus, candidates)
    if len(pool) < num_partitions:
        raise ValueError(
            f"corpus {corpus.name!r}: {len(pool)} examples cannot fill {num_partitions} partitions"
        )
    rng = _rng(seed)
    if method == "iid":
        shuffled = rng.permutation(pool)
        return [sorted(part.tolist()) for part in np.array_split(shuffled, num_partitions)]
    if method == "dirichlet":
        keys = corpus.class_keys()
        return _dirichlet(pool, [keys[i] for i in pool], num_partitions, alpha, min_size, rng)
    return _natural(corpus, pool, num_partitions)


def _dirichlet(
    pool: np.ndarray,
    keys: list[str],
    num_partitions: int,
    alpha: float,
    min_size: int,
    rng: np.random.Generator,
) -> list[list[int]]:
    if alpha <= 0:
        raise ValueError(f"dirichlet alpha = {alpha}: must be above 0")
    if len(pool) < num_partitions * min_size:
        raise ValueError(
            f"dirichlet split: {len(pool)} examples cannot give {num_partitions} partitions "
            f"{min_size} examples each"
        )
    by_class: dict[str, list[int]] = {}
    for index, key in zip(pool.tolist(), keys, strict=True):
        by_class.setdefault(key, []).append(index)
    classes = [np.asarray(by_class[key]) for key in sorted(by_class)]  # fixed order for the draws
    concentration = np.full(num_partitions, alpha)
    smallest = 0
    for _ in range(DIRICHLET_MAX_TRIES):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for members in classes:
            shares = rng.dirichlet(concentration)
            if not np.all(np.isfinite(shares)):
                # Tiny alphas can underflow to 0/0; skipping the class fails the total check
                # below, so the whole draw is redone.
                continue
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for part, chunk in zip(parts, np.split(rng.permutation(members), cuts), strict=True):
                part.extend(chunk.tolist())
        smallest = min(len(part) for part in parts)
        if smallest >= min_size and sum(map(len, parts)) == len(pool):
            return [sorted(part) for part in parts]
    raise ValueError(
        f"dirichlet split with alpha = {alpha}: after {DIRICHLET_MAX_TRIES} draws a partition "
        f"still had {smallest} < {min_size} examples; raise alpha, use fewer partitions, or iid"
    )


def _natural(corpus: Corpus, pool: np.ndarray, num_partitions: int) -> list[list[int]]:
    by_group: dict[str, list[int]] = {}
    for index in pool.tolist():
        by_group.setdefault(corpus.examples[index].group, []).append(index)
    if len(by_group) < num_partitions:
        hint = " (its examples have no group)" if set(by_group) == {""} else ""
        raise ValueError(
            f"natural partitioning of {corpus.name!r} into {num_partitions} partitions needs at "
            f"least {num_partitions} groups but it has {len(by_group)}{hint}; use fewer "
            "partitions or the dirichlet or iid partitioner"
        )
    # Greedy longest-processing-time balancing: biggest group first, onto the smallest partition
    # (ties by index), so sizes are as even as whole groups allow and the result is deterministic.
    heap = [(0, partition) for partition in range(num_partitions)]
    parts: list[list[int]] = [[] for _ in range(num_partitions)]
    for group in sorted(by_group, key=lambda g: (-len(by_group[g]), g)):
        size, partition = heapq.heappop(heap)
        parts[partition].extend(by_group[group])
        heapq.heappush(heap, (size + len(by_group[group]), partition))
    return [sorted(part) for part in parts]


def split_fraction(
    indices: Sequence[int], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Hold a random share of some indices out.

    Parameters
    ----------
    indices
        What to split.
    fraction
        The share to hold out, in [0, 1); rounded to the nearest count, but at least one when
        `fraction` > 0 and there are two or more indices, and never all of them.
    seed
        Seed of the draw.

    Returns
    -------
    tuple[list[int], list[int]]
        (the rest, the held-out part), each sorted.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction = {fraction}: must be in [0, 1)")
    values = np.asarray(list(indices), dtype=np.int64)
    count = _held_out_count(len(values), fraction)
    order = _rng(seed).permutation(len(values))
    held = values[order[:count]]
    rest = values[order[count:]]
    return sorted(rest.tolist()), sorted(held.tolist())


@dataclass(frozen=True)
class FederatedSplit:
    """Who holds which examples.

    Attributes
    ----------
    test
        The server's global test set.
    clients
        Per client, (training indices, held-out indices).
    """

    test: list[int]
    clients: list[tuple[list[int], list[int]]]


def federated_split(
    corpus: Corpus,
    num_partitions: int,
    method: str,
    *,
    alpha: float,
    test_fraction: float,
    held_out_fraction: float,
    seed: int,
) -> FederatedSplit:
    """Draw the global test set, partition the rest, and hold out a share of each partition.

    Parameters
    ----------
    corpus
        The examples.
    num_partitions
        How many clients.
    method
        One of `PARTITIONERS`; see `partition_indices`.
    alpha
        Dirichlet concentration (dirichlet only).
    test_fraction
        Share of all examples in the server's test set, in [0, 1). The draw is stratified by
        class (label, or group for causal LM), so every class is represented about in
        proportion.
    held_out_fraction
        Share of each client's examples kept out of its training, in [0, 1).
    seed
        One seed for the whole split; each step draws from its own stream of it.

    Returns
    -------
    FederatedSplit
        Disjoint test, train and held-out sets covering the whole corpus.
    """
    test = global_test_indices(corpus, test_fraction, seed)
    taken = set(test)
    rest = [index for index in range(len(corpus)) if index not in taken]
    parts = partition_indices(
        corpus, num_partitions, method, alpha=alpha, seed=seed, candidates=rest
    )
    clients = [
        split_fraction(part, held_out_fraction, _derived_seed(seed, _HELD_OUT_STREAM, client))
        for client, part in enumerate(parts)
    ]
    return FederatedSplit(test=test, clients=clients)


def global_test_indices(corpus: Corpus, test_fraction: float, seed: int) -> list[int]:
    """The server's global test set, as `federated_split` draws it.

    It depends on the corpus, the fraction and the seed only, not on the number of clients or
    the partitioner, so the server can compute it without knowing how the rest is split.

    Parameters
    ----------
    corpus
        The examples.
    test_fraction
        Share of all examples, in [0, 1); at least one example when above 0 and the corpus has
        two or more. Stratified by class (label, or group for causal LM): each class gets its
        share, rounded by largest remainder.
    seed
        The split's seed.

    Returns
    -------
    list[int]
        Sorted example indices.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction = {test_fraction}: must be in [0, 1)")
    return _stratified_sample(corpus, test_fraction, _rng(seed, _TEST_STREAM))


def _stratified_sample(corpus: Corpus, fraction: float, rng: np.random.Generator) -> list[int]:
    """A `fraction` of the corpus with each class's share close to its share of the whole."""
    total = _held_out_count(len(corpus), fraction)
    if total == 0:
        return []
    by_class: dict[str, list[int]] = {}
    for index, key in enumerate(corpus.class_keys()):
        by_class.setdefault(key, []).append(index)
    keys = sorted(by_class)
    # Largest-remainder apportionment: floors first, then one more for the largest remainders,
    # so the quotas add up to exactly `total`.
    exact = [total * len(by_class[key]) / len(corpus) for key in keys]
    quotas = [math.floor(value) for value in exact]
    by_remainder = sorted(range(len(keys)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in by_remainder[: total - sum(quotas)]:
        quotas[i] += 1
    chosen: list[int] = []
    for key, quota in zip(keys, quotas, strict=True):
        members = by_class[key]
        chosen.extend(rng.choice(members, size=quota, replace=False).tolist())
    return sorted(chosen)


def _held_out_count(size: int, fraction: float) -> int:
    if fraction <= 0 or size < 2:
        return 0
    return min(max(1, math.floor(fraction * size + 0.5)), size - 1)


def _pool(corpus: Corpus, candidates: Sequence[int] | None) -> np.ndarray:
    if candidates is None:
        return np.arange(len(corpus))
    pool = np.asarray(list(candidates), dtype=np.int64)
    if pool.size and (pool.min() < 0 or pool.max() >= len(corpus)):
        raise ValueError(
            f"candidates must be indices into corpus {corpus.name!r} (0..{len(corpus) - 1})"
        )
    if len(np.unique(pool)) != len(pool):
        raise ValueError("candidates must not repeat an index")
    return np.sort(pool)  # the split must not depend on the order the caller listed them in


def _rng(seed: int, *stream: int) -> np.random.Generator:
    if seed < 0:
        raise ValueError(f"seed = {seed}: must be 0 or more")
    return np.random.default_rng([seed, *stream] if stream else seed)


def _derived_seed(seed: int, *stream: int) -> int:
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])
