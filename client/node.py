"""What every client round needs to know about its node: its partition, its seeds, its metrics."""

from __future__ import annotations

import dataclasses
import zlib

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from client.node_config import node_job, node_settings
from federated.config import RunConfig, TrainSettings, parse_run_config
from federated.model.evaluation import EvalResult
from federated.protocol import message_keys as keys
from federated.protocol.reply_contract import (
    CLIENT_LEVEL,
    PARTITION_METRIC_KEYS,
    computed_release,
    eval_metric_keys,
    metric_key_problem,
    train_metric_keys,
)


def describe(msg: Message, context: Context) -> Message:
    """The answer to the server's question at start: which partition of how many this node
    holds, and whether it takes zeroth-order steps on the factors of a LoRA run (its node
    config's mode or device). The server samples and orders clients by partition, not by node
    IDs, which change from launch to launch. A node config the run cannot take is this
    node's error reply, which the server logs as it leaves the node out."""
    config = parse_run_config(context.run_config)
    node = node_settings(context)
    job = node_job(config, node)
    values = {
        keys.PARTITION_ID: node.partition_id,
        keys.NUM_PARTITIONS: node.num_partitions,
        keys.ZO_ON_FACTORS: float(job.zo_on_factors(config)),
    }
    metrics = contracted(values, PARTITION_METRIC_KEYS)
    return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)


def planned(
    config: RunConfig, round_config: ConfigRecord, partition_id: int, node_batch: int | None = None
) -> tuple[TrainSettings, int]:
    """This round's training settings and LoRA rank: the run's, or the device simulator's
    smaller ones for this client's device, with at most ``node_batch`` examples a batch (what
    this node's own device allows). A plan above the run's settings is refused."""
    settings, rank = config.train, config.lora.rank_of(partition_id)
    wanted = {
        keys.PLANNED_STEPS: settings.local_steps or None,  # None: epochs, no fixed ceiling
        keys.PLANNED_BATCH: settings.batch_size,
        keys.PLANNED_RANK: rank,
    }
    values = {}
    for key, ceiling in wanted.items():
        if key not in round_config:
            continue
        value = round_config[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < 1
            or (ceiling is not None and value > ceiling)
        ):
            raise ValueError(f"the server planned {key} = {value!r}, outside 1..{ceiling}")
        values[key] = value
    if keys.PLANNED_STEPS in values:
        settings = dataclasses.replace(
            settings, local_steps=values[keys.PLANNED_STEPS], local_epochs=0.0
        )
    if keys.PLANNED_BATCH in values:
        settings = dataclasses.replace(settings, batch_size=values[keys.PLANNED_BATCH])
    if node_batch is not None and node_batch < settings.batch_size:
        settings = dataclasses.replace(settings, batch_size=node_batch)
    return settings, values.get(keys.PLANNED_RANK, rank)


def planned_mode(
    config: RunConfig, round_config: ConfigRecord, node_mode: str | None = None
) -> str:
    """How this client trains this round: the run's mode, or, in a LoRA run, zeroth-order
    steps on the LoRA factors where the device simulator found only inference memory or the
    node's own config (``node_mode``) asks for them."""
    mode = round_config.get(keys.PLANNED_MODE, node_mode or config.mode)
    if mode != config.mode and not (config.mode == "lora" and mode == "zo"):
        raise ValueError(
            f"the server planned {keys.PLANNED_MODE} = {mode!r}; a {config.mode} run allows "
            + ("lora or zo" if config.mode == "lora" else config.mode)
        )
    return str(mode)


def run_seed(config: RunConfig, *parts: object) -> int:
    """A seed for one purpose of one client in one round, the same on every rerun."""
    return zlib.crc32("/".join(map(str, (config.seed, *parts))).encode())


def contracted(values: dict[str, float], expected: frozenset[str]) -> MetricRecord:
    """The reply's metrics, which must be exactly the contract's
    (``federated.protocol.reply_contract``): the server rejects any other set."""
    problem = metric_key_problem(set(values), expected)
    if problem:
        raise RuntimeError(f"this client's reply breaks the reply contract: {problem}")
    return MetricRecord(values)


def train_metrics(values: dict[str, float], mode: str, config: RunConfig) -> MetricRecord:
    """A training reply's metrics, as the run releases them (``computed_release``): a
    record-level DP client drops what it computed from its data without noise, a client-level
    DP client all of it and weighs 1."""
    release = computed_release(config)
    expected = train_metric_keys(mode, release)
    values = {k: v for k, v in values.items() if k in expected}
    if release == CLIENT_LEVEL:
        values[keys.NUM_EXAMPLES] = 1.0
    return contracted(values, expected)


def eval_metrics(
    result: EvalResult, task: str, global_result: EvalResult | None = None
) -> MetricRecord:
    """An evaluation's metrics: examples, loss, and the task's metric; for a personalised model,
    ``global_result`` (the global model's) beside them."""
    values = {keys.NUM_EXAMPLES: result.num_examples, keys.EVAL_LOSS: result.loss}
    if result.perplexity is not None:
        values[keys.EVAL_PERPLEXITY] = result.perplexity
    if result.accuracy is not None:
        values[keys.EVAL_ACCURACY] = result.accuracy
    if global_result is not None:
        values[keys.EVAL_GLOBAL_LOSS] = global_result.loss
        if global_result.accuracy is not None:
            values[keys.EVAL_GLOBAL_ACCURACY] = global_result.accuracy
    return contracted(values, eval_metric_keys(task, personalised=global_result is not None))


def refuse_private_evaluation(config: RunConfig) -> None:
    """A record-level or distributed DP client releases nothing about its held-out records:
    their loss and accuracy are exact functions of its data that no accountant covers."""
    if config.dp.quiet_clients:
        raise PermissionError(
            "DP: this client releases no held-out metrics (exact functions of its records); "
            "the server evaluates on its own test set"
        )
