"""The Flower ClientApp: set the global LoRA tensors, train or evaluate, reply."""

from __future__ import annotations

import zlib
from typing import Any

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from peft import PeftModel

from client.lora_trainer import train_lora
from federated import message_keys as keys
from federated.config import RunConfig, parse_run_config
from federated.evaluation import evaluate_model
from federated.lora import load_trainable_state, trainable_state
from federated.wire import record_to_tensors, tensors_to_record
from federated.workspace import client_indices, encode_indices, lora_model

app = ClientApp()

# Ray gives each actor one CPU; more torch threads than that only fight over it.
torch.set_num_threads(1)


def _partition(context: Context) -> tuple[int, int]:
    node = context.node_config
    if "partition-id" not in node or "num-partitions" not in node:
        raise ValueError(
            "this SuperNode has no partition: start it with "
            "--node-config 'partition-id=<i> num-partitions=<n>'"
        )
    return int(node["partition-id"]), int(node["num-partitions"])


def _prepare(msg: Message, context: Context) -> tuple[RunConfig, PeftModel, Any, int, int]:
    """The run config, the shared model set to the global tensors, its tokenizer, the partition."""
    config = parse_run_config(context.run_config)
    partition_id, num_partitions = _partition(context)
    model, tokenizer = lora_model(config)
    load_trainable_state(model, record_to_tensors(msg.content.array_records[keys.ARRAYS]))
    return config, model, tokenizer, partition_id, num_partitions


@app.train()
def train(msg: Message, context: Context) -> Message:
    config, model, tokenizer, partition_id, num_partitions = _prepare(msg, context)
    train_ids, _ = client_indices(config, partition_id, num_partitions)
    encoded = encode_indices(config, tokenizer, train_ids)
    server_round = int(msg.content.config_records[keys.CONFIG][keys.SERVER_ROUND])
    # Each (run seed, client, round) gets its own batch order, the same on every rerun.
    generator = torch.Generator().manual_seed(
        zlib.crc32(f"{config.seed}/{partition_id}/{server_round}".encode())
    )
    result = train_lora(
        model,
        encoded,
        config.task,
        config.train,
        pad_token_id=tokenizer.pad_token_id,
        generator=generator,
    )
    metrics = MetricRecord(
        {
            keys.NUM_EXAMPLES: len(encoded),
            keys.PARTITION_ID: partition_id,
            keys.TRAIN_LOSS: result.loss,
            keys.TRAIN_STEPS: result.steps,
            keys.TRAIN_SECONDS: result.seconds,
            keys.PEAK_MEMORY_MB: result.peak_memory_mb,
        }
    )
    content = RecordDict(
        {keys.ARRAYS: tensors_to_record(trainable_state(model)), keys.METRICS: metrics}
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    config, model, tokenizer, partition_id, num_partitions = _prepare(msg, context)
    _, held_out = client_indices(config, partition_id, num_partitions)
    encoded = encode_indices(config, tokenizer, held_out, limit=config.eval.max_examples)
    result = evaluate_model(
        model,
        encoded,
        config.task,
        batch_size=config.eval.batch_size,
        pad_token_id=tokenizer.pad_token_id,
    )
    values = {keys.NUM_EXAMPLES: result.num_examples, keys.EVAL_LOSS: result.loss}
    if result.perplexity is not None:
        values[keys.EVAL_PERPLEXITY] = result.perplexity
    if result.accuracy is not None:
        values[keys.EVAL_ACCURACY] = result.accuracy
    return Message(content=RecordDict({keys.METRICS: MetricRecord(values)}), reply_to=msg)
