"""A LoRA client's round: take the strategy's tensors and plan, train or evaluate, reply."""

from __future__ import annotations

import dataclasses

import torch
from flwr.app import Context, Message, MessageType, RecordDict

from client.dp_lora_trainer import train_lora_dp
from client.lora_trainer import train_lora
from client.node import (
    eval_metrics,
    planned,
    planned_mode,
    refuse_private_evaluation,
    run_seed,
    train_metrics,
)
from client.node_config import node_job, node_settings
from client.node_files import run_key, state_root
from client.node_records import node_records
from client.privacy_budget import PrivateClient
from federated.config import parse_run_config
from federated.data.corpus import Example
from federated.devices.planner import examples_in_memory
from federated.model.evaluation import EvalResult, evaluate_model
from federated.model.local_model import LocalModel
from federated.model.lora import trainable_parameters, trainable_state
from federated.model.workspace import Encoded, encode_records, lora_model
from federated.personal_factors import PersonalFactors
from federated.privacy.secret_randomness import secret_generator
from federated.protocol import message_keys as keys
from federated.protocol.round_plan import RoundPlan
from federated.protocol.wire import record_to_tensors, tensors_to_record
from federated.zo.factor_steps import factor_lr, factor_targets
from federated.zo.seed_pool import SeedPool
from federated.zo.trainer import train_zo


class _Round:
    """One message's view: the run config, this client's partition and model, the plan."""

    def __init__(self, msg: Message, context: Context) -> None:
        self.config = parse_run_config(context.run_config)
        self.node = node_settings(context)
        self.partition_id, self.num_partitions = self.node.partition_id, self.node.num_partitions
        job = node_job(self.config, self.node)
        content = msg.content
        round_config = content.config_records[keys.CONFIG]
        self.settings, rank = planned(self.config, round_config, self.partition_id, job.batch)
        # A node sized by its device holds no more examples at once than its plan counted:
        # DP-SGD's Poisson draws above that are taken in chunks.
        self.physical_batch = (
            examples_in_memory(self.config, job.batch)
            if job.batch is not None
            else self.config.dp.record.physical_batch
        )
        self.mode = planned_mode(self.config, round_config, job.mode)
        self.local: LocalModel = lora_model(self.config, rank)
        self.plan = RoundPlan.from_config(round_config)
        self.server_round = int(round_config[keys.SERVER_ROUND])
        self.received = record_to_tensors(content.array_records[keys.ARRAYS])
        delta = content.array_records.get(keys.BASE_DELTA)
        self.base_delta = record_to_tensors(delta) if delta is not None else {}
        self.personal = PersonalFactors(
            state_root(context), run_key(msg, context), (self.partition_id, self.num_partitions)
        )
        self.personal_since: int | None = None
        self.message_type = msg.metadata.message_type

    @property
    def b_keys(self) -> set[str]:
        return {p.b_key for p in self.local.pairs}

    def personal_b(self) -> dict[str, torch.Tensor]:
        """This client's own B factors from earlier rounds (none before its first round); an
        evaluation comes after the round's training, and uses what it trained."""
        evaluating = self.message_type == MessageType.EVALUATE
        self.personal_since, factors = self.personal.before(self.server_round + evaluating)
        return factors

    def load(self, *, personal: bool) -> None:
        tensors = dict(self.received)
        if self.plan.fresh_factors:
            tensors.update(
                self.local.fresh_factors(
                    run_seed(self.config, self.partition_id, self.server_round)
                )
            )
        if personal:
            # Before a client's first round its personal B is the seeded initial one (zero).
            tensors.update({k: self.local.initial[k] for k in self.b_keys})
            tensors.update(self.personal_b())
        self.local.load(tensors, self.base_delta)

    def evaluate(self, records: list[Example]) -> EvalResult:
        encoded = encode_records(
            self.config, self.local.tokenizer, records, limit=self.config.eval.max_examples
        )
        return evaluate_model(
            self.local.model,
            encoded,
            self.config.task,
            batch_size=self.config.eval.batch_size,
            pad_token_id=self.local.tokenizer.pad_token_id,
            precision=self.config.train.precision,
        )


def train(msg: Message, context: Context) -> Message:
    r = _Round(msg, context)
    records, _ = node_records(r.config, r.node)
    return _train(msg, context, r, encode_records(r.config, r.local.tokenizer, records))


def train_on(msg: Message, context: Context, encoded: Encoded) -> Message:
    """The training reply to ``msg`` after training on ``encoded`` as this client's records."""
    return _train(msg, context, _Round(msg, context), encoded)


def _train(msg: Message, context: Context, r: _Round, encoded: Encoded) -> Message:
    if r.mode == "zo":
        return _train_zeroth_order(msg, r, encoded)
    private = None
    if r.config.dp.record_level:
        private = PrivateClient(context, r.config, run_key(msg, context), r.node, len(encoded))
        if private.declined_at is not None:
            return private.declined(msg)
    r.load(personal=r.plan.keep_b)
    lr = r.config.train.lr_at(r.server_round, r.config.num_server_rounds)
    settings = dataclasses.replace(r.settings, lr=lr)
    with r.local.a_frozen(not r.plan.train_a), torch.random.fork_rng(devices=[]):
        # Dropout draws from torch's global generator: seeded per (run seed, client, round), it
        # drops the same units on every rerun, whichever process the client lands in.
        torch.manual_seed(run_seed(r.config, r.partition_id, r.server_round, "dropout"))
        if private is None:
            # Each (run seed, client, round) gets its own batch order, the same on every rerun.
            generator = torch.Generator().manual_seed(
                run_seed(r.config, r.partition_id, r.server_round, "batches")
            )
            result = train_lora(
                r.local.model,
                encoded,
                r.config.task,
                settings,
                pad_token_id=r.local.tokenizer.pad_token_id,
                generator=generator,
            )
        else:
            result = train_lora_dp(
                r.local.model,
                encoded,
                r.config.task,
                settings,
                noise_multiplier=private.round.noise_multiplier,
                max_grad_norm=r.config.dp.record.max_grad_norm,
                sample_rate=private.round.sample_rate,
                expected_batch=private.round.expected_batch,
                mode=r.config.dp.record.grad_sample_mode,
                pad_token_id=r.local.tokenizer.pad_token_id,
                generator=secret_generator("dp-sgd", r.partition_id, r.server_round),
                physical_batch=r.physical_batch,
            )
    state = trainable_state(r.local.model)
    if r.plan.keep_b:
        r.personal.save(r.server_round, {k: state[k] for k in r.b_keys}, r.personal_since)
    withheld = r.plan.withheld(r.local.pairs)
    values = {
        keys.NUM_EXAMPLES: len(encoded) if private is None else private.count,
        keys.PARTITION_ID: r.partition_id,
        keys.LORA_RANK: r.local.rank,
        keys.TRAIN_LOSS: result.loss,
        keys.TRAIN_STEPS: result.steps,
        keys.TRAIN_SECONDS: result.seconds,
        keys.PEAK_MEMORY_MB: result.peak_memory_mb,
    }
    if private is not None:
        values[keys.DP_EPSILON] = private.spent()
    # Under SecAgg+ this reply is masked here and never travels as it is: nothing to round.
    wire = "float32" if r.config.secagg.enabled else r.config.wire.dtype
    upload = tensors_to_record({k: v for k, v in state.items() if k not in withheld}, wire)
    metrics = train_metrics(values, r.config.mode, r.config)
    return Message(content=RecordDict({keys.ARRAYS: upload, keys.METRICS: metrics}), reply_to=msg)


def _train_zeroth_order(msg: Message, r: _Round, encoded: Encoded) -> Message:
    """A mixed federation's device with inference memory only: zeroth-order steps on the global
    factors, sent as (seed index, scalar) pairs that the server turns back into factors
    (``federated.zo.factor_steps``). The device simulator refuses record-level DP, so nothing
    here is private."""
    r.load(personal=False)
    z, seed = r.config.zo, run_seed(r.config, r.partition_id, r.server_round, "zo")
    result = train_zo(
        r.local.model,
        factor_targets(trainable_parameters(r.local.model)),
        SeedPool.from_run_seed(r.config.seed, z.pool_size),
        encoded,
        r.config.task,
        steps=r.settings.steps_for(len(encoded)),
        lr=factor_lr(r.config),
        eps=z.eps,
        batch_size=r.settings.batch_size,
        structure=z.perturbation,
        pad_token_id=r.local.tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
        momentum=z.momentum,
    )
    steps = {
        keys.SEED_INDICES: torch.tensor(result.indices, dtype=torch.int64),
        keys.SEED_SCALARS: torch.tensor(result.scalars, dtype=torch.float32),
    }
    values = {
        keys.NUM_EXAMPLES: len(encoded),
        keys.PARTITION_ID: r.partition_id,
        keys.TRAIN_LOSS: result.loss,
        keys.TRAIN_STEPS: result.steps,
        keys.TRAIN_SECONDS: result.seconds,
        keys.PEAK_MEMORY_MB: result.peak_memory_mb,
    }
    metrics = train_metrics(values, "zo", r.config)
    content = RecordDict({keys.ARRAYS: tensors_to_record(steps), keys.METRICS: metrics})
    return Message(content=content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    r = _Round(msg, context)
    refuse_private_evaluation(r.config)
    _, held_out = node_records(r.config, r.node)
    r.load(personal=False)
    result = r.evaluate(held_out)
    global_result = None
    if r.plan.keep_b:
        # The personalised model is what this client uses; the global one is reported beside it.
        r.load(personal=True)
        result, global_result = r.evaluate(held_out), result
    metrics = eval_metrics(result, r.config.task, global_result)
    return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)
