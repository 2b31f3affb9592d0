"""What a sound reply carries: exactly these records and exactly these metric keys.

Clients build their metrics against this contract and the server checks every reply against
it, so the two cannot drift. It matters beyond tidiness: Flower's strategies raise on replies
whose metric keys differ, so one reply with a key more or less, let through, would end the run.
"""

from __future__ import annotations

from federated import message_keys as keys
from federated.tasks import TASK_CAUSAL_LM


def train_metric_keys(mode: str, private: bool, distributed: bool = False) -> frozenset[str]:
    """A training reply's metrics: its weight, partition and steps; its loss, time and memory,
    or under record-level DP instead of those (unnoised statistics) the epsilon it has spent;
    under distributed DP alone neither (its weight is then 1, not its record count)."""
    names = {keys.NUM_EXAMPLES, keys.PARTITION_ID, keys.TRAIN_STEPS}
    if private:
        names.add(keys.DP_EPSILON)
    elif not distributed:
        names |= set(keys.UNNOISED_TRAIN_METRICS)
    if mode == "lora":
        names.add(keys.LORA_RANK)
    return frozenset(names)


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
