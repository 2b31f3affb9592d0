"""The Flower ClientApp: take the round's global state, train or evaluate, reply."""

from __future__ import annotations

import zlib

import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.lora_trainer import train_lora
from federated import message_keys as keys
from federated.config import RunConfig, parse_run_config
from federated.evaluation import EvalResult, evaluate_model
from federated.local_model import LocalModel
from federated.lora import trainable_state
from federated.round_plan import RoundPlan
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


def _seed(config: RunConfig, *parts: object) -> int:
    return zlib.crc32("/".join(map(str, (config.seed, *parts))).encode())


class _Round:
    """One message's view: the run config, this client's partition and model, the plan."""

    def __init__(self, msg: Message, context: Context) -> None:
        self.config = parse_run_config(context.run_config)
        self.partition_id, self.num_partitions = _partition(context)
        self.local: LocalModel = lora_model(
            self.config, self.config.lora.rank_of(self.partition_id)
        )
        content = msg.content
        self.plan = RoundPlan.from_config(content.config_records[keys.CONFIG])
        self.server_round = int(content.config_records[keys.CONFIG][keys.SERVER_ROUND])
        self.received = record_to_tensors(content.array_records[keys.ARRAYS])
        delta = content.array_records.get(keys.BASE_DELTA)
        self.base_delta = record_to_tensors(delta) if delta is not None else {}
        self.state = context.state

    @property
    def b_keys(self) -> set[str]:
        return {p.b_key for p in self.local.pairs}

    def personal_b(self) -> dict[str, torch.Tensor]:
        """This client's own B factors from earlier rounds (none before its first round)."""
        record = self.state.array_records.get(keys.PERSONAL_B)
        return record_to_tensors(record) if record is not None else {}

    def load(self, *, personal: bool) -> None:
        tensors = dict(self.received)
        if self.plan.fresh_factors:
            tensors.update(
                self.local.fresh_factors(_seed(self.config, self.partition_id, self.server_round))
            )
        if personal:
            # Before a client's first round its personal B is the seeded initial one (zero).
            tensors.update({k: self.local.initial[k] for k in self.b_keys})
            tensors.update(self.personal_b())
        self.local.load(tensors, self.base_delta)

    def evaluate(self, indices: list[int]) -> EvalResult:
        encoded = encode_indices(
            self.config, self.local.tokenizer, indices, limit=self.config.eval.max_examples
        )
        return evaluate_model(
            self.local.model,
            encoded,
            self.config.task,
            batch_size=self.config.eval.batch_size,
            pad_token_id=self.local.tokenizer.pad_token_id,
        )


@app.train()
def train(msg: Message, context: Context) -> Message:
    r = _Round(msg, context)
    r.load(personal=r.plan.keep_b)
    train_ids, _ = client_indices(r.config, r.partition_id, r.num_partitions)
    encoded = encode_indices(r.config, r.local.tokenizer, train_ids)
    # Each (run seed, client, round) gets its own batch order, the same on every rerun.
    generator = torch.Generator().manual_seed(
        _seed(r.config, r.partition_id, r.server_round, "batches")
    )
    with r.local.a_frozen(not r.plan.train_a):
        result = train_lora(
            r.local.model, encoded, r.config.task, r.config.train,
            pad_token_id=r.local.tokenizer.pad_token_id, generator=generator,
        )  # fmt: skip
    state = trainable_state(r.local.model)
    if r.plan.keep_b:
        r.state[keys.PERSONAL_B] = tensors_to_record({k: state[k] for k in r.b_keys})
    withheld = r.plan.withheld(r.local.pairs)
    metrics = MetricRecord(
        {
            keys.NUM_EXAMPLES: len(encoded),
            keys.PARTITION_ID: r.partition_id,
            keys.LORA_RANK: r.local.rank,
            keys.TRAIN_LOSS: result.loss,
            keys.TRAIN_STEPS: result.steps,
            keys.TRAIN_SECONDS: result.seconds,
            keys.PEAK_MEMORY_MB: result.peak_memory_mb,
        }
    )
    upload = tensors_to_record({k: v for k, v in state.items() if k not in withheld})
    return Message(content=RecordDict({keys.ARRAYS: upload, keys.METRICS: metrics}), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    r = _Round(msg, context)
    _, held_out = client_indices(r.config, r.partition_id, r.num_partitions)
    r.load(personal=False)
    result = r.evaluate(held_out)
    values = {keys.NUM_EXAMPLES: result.num_examples, keys.EVAL_LOSS: result.loss}
    if r.plan.keep_b:
        # The personalised model is what this client uses; the global one is reported beside it.
        values[keys.EVAL_GLOBAL_LOSS] = result.loss
        r.load(personal=True)
        result = r.evaluate(held_out)
        values[keys.EVAL_LOSS] = result.loss
    if result.perplexity is not None:
        values[keys.EVAL_PERPLEXITY] = result.perplexity
    if result.accuracy is not None:
        values[keys.EVAL_ACCURACY] = result.accuracy
    return Message(content=RecordDict({keys.METRICS: MetricRecord(values)}), reply_to=msg)
