"""What a sound reply carries: exactly these records and exactly these metric keys.

Clients build their metrics against this contract and the server checks every reply against
it, so the two cannot drift. It matters beyond tidiness: Flower's strategies raise on replies
whose metric keys differ, so one reply with a key more or less, let through, would end the run.
"""

from __future__ import annotations

from federated.config import RunConfig
from federated.protocol import message_keys as keys
from federated.tasks import TASK_CAUSAL_LM

# How a training reply releases what its client computed from its data.
PLAIN = "plain"  # every statistic, exactly
RECORD_LEVEL = "record-level"  # its noised record count and its epsilon; no unnoised statistic
CLIENT_LEVEL = "client-level"  # none: it weighs 1, its clipped update alone carries its data
MASKED = "masked"  # SecAgg+: the server's plan in the clear; its statistics inside the mask

# What a SecAgg+ client sends in the clear beside its masked vector (without record-level DP):
# what the server planned for it, nothing computed from its data.
MASKED_CLEAR_METRICS = (keys.PARTITION_ID, keys.LORA_RANK)


def computed_release(config: RunConfig) -> str:
    """How a client's training statistics are released by its trainer: under record-level DP
    only as DP releases; under client-level DP not at all (they are exact functions of the
    data the accountant covers only through the clipped, noised update); else exactly."""
    if config.dp.record_level:
        return RECORD_LEVEL
    return CLIENT_LEVEL if config.dp.client_level else PLAIN


def train_release(config: RunConfig) -> str:
    """How a training reply releases them on the wire: under SecAgg+ (without record-level DP,
    whose releases are DP already) masked, else as computed."""
    if config.secagg.enabled and not config.dp.record_level:
        return MASKED
    return computed_release(config)


def train_metric_keys(mode: str, release: str) -> frozenset[str]:
    """A training reply's metrics: its weight, partition and steps; its loss, time and memory,
    or under record-level DP instead of those (unnoised statistics) the epsilon it has spent.
    Under client-level DP its partition and its weight, 1; masked, only what the server
    planned (its partition and rank): the rest travels inside the mask."""
    rank = {keys.LORA_RANK} if mode == "lora" else set()
    if release == MASKED:
        return frozenset(k for k in MASKED_CLEAR_METRICS if k in rank | {keys.PARTITION_ID})
    if release == CLIENT_LEVEL:
        return frozenset({keys.NUM_EXAMPLES, keys.PARTITION_ID} | rank)
    names = {keys.NUM_EXAMPLES, keys.PARTITION_ID, keys.TRAIN_STEPS} | rank
    if release == RECORD_LEVEL:
        return frozenset(names | {keys.DP_EPSILON})
    return frozenset(names | set(keys.UNNOISED_TRAIN_METRICS))


# A record-level DP client that declines a round (its budget would be overspent) says only that.
DECLINED_METRIC_KEYS = frozenset(
    {keys.NUM_EXAMPLES, keys.PARTITION_ID, keys.DP_DECLINED, keys.DP_EPSILON, keys.DP_EPSILON_NEXT}
)


# A node's answer to the server's question at start: which partition of how many it holds.
PARTITION_METRIC_KEYS = frozenset({keys.PARTITION_ID, keys.NUM_PARTITIONS, keys.ZO_ON_FACTORS})


def eval_metric_keys(task: str, personalised: bool) -> frozenset[str]:
    """An evaluation reply's metrics: examples, loss, perplexity (LM) or accuracy (classifier),
    and for a personalised model (fedsa-lora) the global model's loss and accuracy beside."""
    language_model = task == TASK_CAUSAL_LM
    names = {keys.NUM_EXAMPLES, keys.EVAL_LOSS}
    names.add(keys.EVAL_PERPLEXITY if language_model else keys.EVAL_ACCURACY)
    if personalised:
        names.add(keys.EVAL_GLOBAL_LOSS)
        if not language_model:
            names.add(keys.EVAL_GLOBAL_ACCURACY)
    return frozenset(names)


def metric_key_problem(present: set[str] | frozenset[str], expected: frozenset[str]) -> str | None:
    """Why a reply's metric keys are not the expected ones, or None when they are."""
    missing, extra = sorted(expected - set(present)), sorted(set(present) - expected)
    if not missing and not extra:
        return None
    parts = ([f"missing {missing[:4]}"] if missing else []) + (
        [f"unexpected {extra[:4]}"] if extra else []
    )
    return "metric keys differ: " + ", ".join(parts)
