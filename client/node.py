"""What every client round needs to know about its node: its partition, its seeds, its metrics."""

from __future__ import annotations

import zlib

from flwr.app import Context

from federated import message_keys as keys
from federated.config import RunConfig
from federated.evaluation import EvalResult


def partition_of(context: Context) -> tuple[int, int]:
    """(partition-id, num-partitions) from the node config."""
    node = context.node_config
    if "partition-id" not in node or "num-partitions" not in node:
        raise ValueError(
            "this SuperNode has no partition: start it with "
            "--node-config 'partition-id=<i> num-partitions=<n>'"
        )
    return int(node["partition-id"]), int(node["num-partitions"])


def run_seed(config: RunConfig, *parts: object) -> int:
    """A seed for one purpose of one client in one round, the same on every rerun."""
    return zlib.crc32("/".join(map(str, (config.seed, *parts))).encode())


def eval_metrics(result: EvalResult) -> dict[str, float]:
    """An evaluation's loss, example count and the task's metric, under fedtune's metric keys."""
    values = {keys.NUM_EXAMPLES: result.num_examples, keys.EVAL_LOSS: result.loss}
    if result.perplexity is not None:
        values[keys.EVAL_PERPLEXITY] = result.perplexity
    if result.accuracy is not None:
        values[keys.EVAL_ACCURACY] = result.accuracy
    return values


def refuse_private_evaluation(config: RunConfig) -> None:
    """A record-level DP client releases nothing about its held-out records: their loss and
    accuracy are exact functions of its data that no accountant covers."""
    if config.dp.record_level:
        raise PermissionError(
            "record-level DP: this client releases no held-out metrics (exact functions of its "
            "records); the server evaluates on its own test set"
        )
