"""A zeroth-order client's round: sync the seed sums, rebuild the model, step, reply with pairs."""

from __future__ import annotations

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict

from client.node import eval_metrics, partition_of, run_seed
from client.privacy_budget import RoundPrivacy, declined, ledger_of, over_budget, spend
from client.zo_trainer import ZoPrivacy, train_zo
from federated import message_keys as keys
from federated.config import RunConfig, parse_run_config
from federated.evaluation import evaluate_model
from federated.privacy.sampling import secret_generator
from federated.wire import record_to_tensors, tensors_to_record
from federated.workspace import client_indices, encode_indices, forget_zo_model, zo_model
from federated.zo.sums_sync import client_sums
from federated.zo.zo_model import ZoModel


def _rebuild(msg: Message, context: Context) -> tuple[RunConfig, ZoModel, int, int, int]:
    """The run config, the model rebuilt at the message's seed sums, the partition, the round."""
    config = parse_run_config(context.run_config)
    partition_id, num_partitions = partition_of(context)
    zo = zo_model(config)
    sums, _ = client_sums(msg.content, context.state, len(zo.pool))
    zo.load(sums)
    server_round = int(msg.content.config_records[keys.CONFIG][keys.SERVER_ROUND])
    return config, zo, partition_id, num_partitions, server_round


def train(msg: Message, context: Context) -> Message:
    config, zo, partition_id, num_partitions, server_round = _rebuild(msg, context)
    train_ids, _ = client_indices(config, partition_id, num_partitions)
    encoded = encode_indices(config, zo.tokenizer, train_ids)
    privacy = RoundPrivacy.of(config, len(encoded)) if config.dp.record_level else None
    ledger = ledger_of(context.state)
    if privacy is not None and (epsilon_next := over_budget(ledger, privacy)) is not None:
        return declined(msg, ledger, privacy, epsilon_next, partition_id, len(encoded))
    arrays = record_to_tensors(msg.content.array_records[keys.ARRAYS])
    generator = torch.Generator().manual_seed(run_seed(config, partition_id, server_round, "zo"))
    dp_zo = None
    if privacy is not None:
        dp_zo = ZoPrivacy(
            privacy.noise_multiplier, config.dp.max_grad_norm, privacy.sample_rate,
            secret_generator(),
        )  # fmt: skip
    try:
        result = train_zo(
            zo.model, zo.targets, zo.pool, encoded, config.task,
            steps=config.train.local_steps, lr=config.zo.lr, eps=config.zo.eps,
            batch_size=config.train.batch_size, structure=config.zo.perturbation,
            pad_token_id=zo.tokenizer.pad_token_id,
            generator=generator,
            probabilities=arrays.get(keys.SEED_PROBABILITIES),
            privacy=dp_zo,
        )  # fmt: skip
    except BaseException:
        forget_zo_model()  # stopped mid-step: the weights are unknown, the next round reloads w0
        raise
    zo.moved_by(result.indices, result.scalars)  # the next load replays these steps away
    steps = {
        keys.SEED_INDICES: torch.tensor(result.indices, dtype=torch.int64),
        keys.SEED_SCALARS: torch.tensor(result.scalars, dtype=torch.float32),
    }
    values = {
        keys.NUM_EXAMPLES: len(encoded),
        keys.PARTITION_ID: partition_id,
        keys.TRAIN_LOSS: result.loss,
        keys.TRAIN_STEPS: len(result.indices),
        keys.TRAIN_SECONDS: result.seconds,
        keys.PEAK_MEMORY_MB: result.peak_memory_mb,
    }
    if privacy is not None:
        values[keys.DP_EPSILON] = spend(context.state, ledger, privacy)
    content = RecordDict(
        {keys.ARRAYS: tensors_to_record(steps), keys.METRICS: MetricRecord(values)}
    )
    return Message(content=content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    config, zo, partition_id, num_partitions, _ = _rebuild(msg, context)
    _, held_out = client_indices(config, partition_id, num_partitions)
    encoded = encode_indices(config, zo.tokenizer, held_out, limit=config.eval.max_examples)
    result = evaluate_model(
        zo.model, encoded, config.task,
        batch_size=config.eval.batch_size, pad_token_id=zo.tokenizer.pad_token_id,
    )  # fmt: skip
    return Message(
        content=RecordDict({keys.METRICS: MetricRecord(eval_metrics(result))}), reply_to=msg
    )
