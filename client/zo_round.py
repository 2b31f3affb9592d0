"""A zeroth-order client's round: sync the seed sums, rebuild the model, step, reply with pairs."""

from __future__ import annotations

from typing import NamedTuple

import torch
from flwr.app import Context, Message, RecordDict

from client.node import (
    eval_metrics,
    planned,
    refuse_private_evaluation,
    run_seed,
    train_metrics,
)
from client.node_config import NodeJob, NodeSettings, node_job, node_settings
from client.node_files import run_key
from client.node_records import node_records
from client.privacy_budget import PrivateClient
from federated.config import RunConfig, parse_run_config
from federated.model.evaluation import evaluate_model
from federated.model.workspace import Encoded, encode_records
from federated.privacy.secret_randomness import secret_generator
from federated.protocol import message_keys as keys
from federated.protocol.wire import record_to_tensors, tensors_to_record
from federated.zo.hybrid import hybrid_state, load_hybrid_
from federated.zo.sensitive import client_mask
from federated.zo.sums_sync import client_sums
from federated.zo.trainer import ZoPrivacy, train_zo
from federated.zo.workspace import forget_zo_model, zo_model
from federated.zo.zo_model import ZoModel


class _Rebuilt(NamedTuple):
    config: RunConfig
    zo: ZoModel
    node: NodeSettings
    job: NodeJob
    server_round: int
    arrays: dict[str, torch.Tensor]  # the message's, decoded once: they may hold a mask and a head


def _with_rate(config: RunConfig, msg: Message) -> RunConfig:
    """The config with the rate the server sent (``zo.lr = 0``: the one it probed)."""
    if config.zo.lr > 0:
        return config
    sent = float(msg.content.config_records[keys.CONFIG].get(keys.ZO_LR, 0.0))
    if not sent > 0:
        raise ValueError("zo.lr = 0 (auto): the server sent no zeroth-order rate (zo-lr)")
    return config.with_zo_lr(sent)


def _rebuild(msg: Message, context: Context) -> _Rebuilt:
    """The run config, the model rebuilt at the message's seed sums, the node, its job, the
    round, and the message's tensors."""
    config = _with_rate(parse_run_config(context.run_config), msg)
    node = node_settings(context)
    job = node_job(config, node)
    arrays = record_to_tensors(msg.content.array_records[keys.ARRAYS])
    mask = client_mask(arrays, context.state) if config.zo.params == "sensitive" else None
    zo = zo_model(config, mask)
    sums, _ = client_sums(msg.content, context.state, len(zo.pool))
    zo.load(sums)
    load_hybrid_(zo.hybrid, arrays)
    server_round = int(msg.content.config_records[keys.CONFIG][keys.SERVER_ROUND])
    return _Rebuilt(config, zo, node, job, server_round, arrays)


def train(msg: Message, context: Context) -> Message:
    rebuilt = _rebuild(msg, context)
    records, _ = node_records(rebuilt.config, rebuilt.node)
    encoded = encode_records(rebuilt.config, rebuilt.zo.tokenizer, records)
    return _train(msg, context, rebuilt, encoded)


def train_on(msg: Message, context: Context, encoded: Encoded) -> Message:
    """The training reply to ``msg`` after training on ``encoded`` as this client's records."""
    return _train(msg, context, _rebuild(msg, context), encoded)


def _train(msg: Message, context: Context, rebuilt: _Rebuilt, encoded: Encoded) -> Message:
    config, zo, node, job, server_round, arrays = rebuilt
    partition_id = node.partition_id
    private, dp_zo = None, None
    if config.dp.record_level:
        private = PrivateClient(context, config, run_key(msg, context), node, len(encoded))
        if private.declined_at is not None:
            return private.declined(msg)
        dp_zo = ZoPrivacy(
            private.round.noise_multiplier,
            config.dp.record.max_grad_norm,
            private.round.sample_rate,
            private.round.expected_batch,
            secret_generator("dp-zo", partition_id, server_round),
        )
    settings, _ = planned(config, msg.content.config_records[keys.CONFIG], partition_id, job.batch)
    generator = torch.Generator().manual_seed(run_seed(config, partition_id, server_round, "zo"))
    try:
        result = train_zo(
            zo.model,
            zo.targets,
            zo.pool,
            encoded,
            config.task,
            steps=settings.local_steps,
            lr=config.zo.lr,
            eps=config.zo.eps,
            batch_size=settings.batch_size,
            structure=config.zo.perturbation,
            pad_token_id=zo.tokenizer.pad_token_id,
            generator=generator,
            probabilities=arrays.get(keys.SEED_PROBABILITIES),
            privacy=dp_zo,
            hybrid=zo.hybrid,
            hybrid_lr=config.zo.hybrid_lr,
            momentum=config.zo.momentum,
        )
    except BaseException:
        forget_zo_model()  # stopped mid-step: the weights are unknown, the next round reloads w0
        raise
    zo.moved_by(result.indices, result.scalars)  # the next load replays these steps away
    steps = {
        keys.SEED_INDICES: torch.tensor(result.indices, dtype=torch.int64),
        keys.SEED_SCALARS: torch.tensor(result.scalars, dtype=torch.float32),
        **hybrid_state(zo.hybrid),
    }
    values = {
        keys.NUM_EXAMPLES: len(encoded) if private is None else private.count,
        keys.PARTITION_ID: partition_id,
        keys.TRAIN_LOSS: result.loss,
        keys.TRAIN_STEPS: result.steps,
        keys.TRAIN_SECONDS: result.seconds,
        keys.PEAK_MEMORY_MB: result.peak_memory_mb,
    }
    if private is not None:
        values[keys.DP_EPSILON] = private.spent()
    metrics = train_metrics(values, config.mode, config)
    content = RecordDict({keys.ARRAYS: tensors_to_record(steps), keys.METRICS: metrics})
    return Message(content=content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    config, zo, node, *_ = _rebuild(msg, context)
    refuse_private_evaluation(config)
    _, held_out = node_records(config, node)
    encoded = encode_records(config, zo.tokenizer, held_out, limit=config.eval.max_examples)
    result = evaluate_model(
        zo.model,
        encoded,
        config.task,
        batch_size=config.eval.batch_size,
        pad_token_id=zo.tokenizer.pad_token_id,
    )
    metrics = eval_metrics(result, config.task)
    return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)
