"""Canaries of one-run privacy auditing (``audit.canaries``): random secret records, half of
them inserted into the clients' training data, that the final model is then asked about.

Canary i is a record no data set holds: a prompt naming a random agent, and as its answer a
secret of random digits (a causal LM must memorise it to lower its loss) or, for a classifier,
the same digits as its text under a random class (a mislabelled record). Whether it is inserted
is a fair coin, and an inserted canary joins the training records of one client (i mod the
number of clients). Both come from the run seed alone, so every client finds its own canaries
and the server knows all of them without a message; the coins are independent of the
training's own randomness (DP's noise and sampling are secret), which is what the audit's
theorem needs.
"""

from __future__ import annotations

import random

from federated.config import RunConfig
from federated.data.corpus import Example
from federated.tasks import TASK_CLASSIFICATION

DIGITS = 12  # a secret's length: 10^12 values, none guessed by chance
PROMPT = "What is the secret code of this agent?"


def _draw(config: RunConfig, what: str, index: int) -> random.Random:
    return random.Random(f"fedtune-canary-{what}-{config.seed}-{index}")


def canary(config: RunConfig, index: int, num_labels: int) -> Example:
    """Canary ``index`` of the run: a secret answer, or a classifier's mislabelled digits."""
    rng = _draw(config, "secret", index)
    secret = " ".join(str(rng.randrange(10)) for _ in range(DIGITS))
    if config.task == TASK_CLASSIFICATION:
        return Example(text=f"code {secret}", label=rng.randrange(num_labels), group="canary")
    # Its own prompt: canaries that shared one could only be learnt as a mixture of secrets.
    agent = "".join(str(rng.randrange(10)) for _ in range(4))
    return Example(text=f"{PROMPT} Agent {agent}.", target=f"The code is {secret}.", group="canary")


def inserted(config: RunConfig, index: int) -> bool:
    """The fair coin that decides whether canary ``index`` joins a client's data."""
    return _draw(config, "coin", index).random() < 0.5


def _client_indices(config: RunConfig, partition_id: int, num_partitions: int) -> list[int]:
    return [
        i for i in range(partition_id, config.audit.canaries, num_partitions) if inserted(config, i)
    ]


def client_canaries(
    config: RunConfig, partition_id: int, num_partitions: int, num_labels: int
) -> list[Example]:
    """The inserted canaries that partition ``partition_id`` trains on."""
    return [
        canary(config, i, num_labels) for i in _client_indices(config, partition_id, num_partitions)
    ]


def client_canary_count(config: RunConfig, partition_id: int, num_partitions: int) -> int:
    """How many records the audit adds to partition ``partition_id``'s training data."""
    return len(_client_indices(config, partition_id, num_partitions))
