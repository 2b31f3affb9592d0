"""A split device's round (mode = split, SFPrompt; or a split device in a LoRA run): its side of
the dialogue the server leads (``federated.protocol.split_keys``). The device holds the head and
the tail and keeps its labels; it trains its prompt (mode = split) or its blocks' LoRA factors (a
LoRA run: the server trains the body's). Between messages what it trains, its optimizer state
and its pruned examples stay in the node state. It recomputes its head's forward for each
backward instead of keeping it across messages (a process may serve each message afresh)."""

from __future__ import annotations

import resource
import time
from functools import lru_cache
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from client.node import planned, run_seed, train_metrics
from client.node_config import NodeSettings, node_settings
from client.node_records import node_records
from federated.config import RunConfig, parse_run_config
from federated.data.encode import collate
from federated.model.losses import lm_loss_terms
from federated.model.presets import load_tokenizer
from federated.model.workspace import Encoded, encode_records, lora_model
from federated.privacy.secret_randomness import secret_generator
from federated.protocol import message_keys as keys
from federated.protocol import split_keys as sk
from federated.protocol.wire import record_to_tensors, tensors_to_record
from federated.split.activation_noise import clipped, noise_like
from federated.split.local_update import el2n_scores, keep_hardest, local_loss_terms
from federated.split.parts import SplitModel
from federated.split.prompt_model import set_prompt
from federated.split.round_optimizer import clipped_step, round_optimizer
from federated.split.split_workspace import split_model

STATE_TENSORS = "split-tensors"  # node state: what the device trains and its AdamW moments
STATE_PROGRESS = "split-progress"  # node state: round, step, kept examples, losses, time


@lru_cache(maxsize=4)
def _encoded(config: RunConfig, node: NodeSettings) -> tuple[Any, Encoded]:
    """This node's tokenizer and training examples, tokenized once per process: every message
    of the exchange reads them."""
    records, _ = node_records(config, node)
    tokenizer = load_tokenizer(config.model.name)
    return tokenizer, encode_records(config, tokenizer, records)


class _Device:
    """This node's split model and data, and its round's progress from the node state."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.config: RunConfig = parse_run_config(context.run_config)
        self.node = node_settings(context)
        self.tokenizer, self.encoded = _encoded(self.config, self.node)

    def begin(self, progress: ConfigRecord) -> None:
        """Work on the round ``progress`` describes, at its planned cut and rank."""
        self.progress = progress
        if self.config.mode == "split":
            model = split_model(self.config).peft_model
        else:  # a LoRA run: the run's adapter (the process's shared, cached one)
            model = lora_model(self.config, int(progress["rank"])).model
        self.split = SplitModel(model, int(progress["cut"]))
        self.trained = self.split.device_trainable()

    # -- the round's state, kept between messages --------------------------------------------
    def restore(self, server_round: int, step: int) -> None:
        progress = self.context.state.config_records.get(STATE_PROGRESS)
        if progress is None or int(progress["round"]) != server_round:
            raise ValueError(f"no split exchange of round {server_round} under way on this node")
        if int(progress["step"]) != step:
            raise ValueError(
                f"the server asked for split step {step}; this node is at {progress['step']}"
            )
        self.begin(progress)
        tensors = record_to_tensors(self.context.state.array_records[STATE_TENSORS])
        with torch.no_grad():
            for key, param in self.trained.items():
                param.copy_(tensors[key])
        self.optimizer = self._optimizer()
        if int(progress["adam-steps"]) > 0:
            for key, param in self.trained.items():
                self.optimizer.state[param] = {
                    "step": torch.tensor(float(progress["adam-steps"])),
                    "exp_avg": tensors[f"exp-avg/{key}"],
                    "exp_avg_sq": tensors[f"exp-avg-sq/{key}"],
                }

    def save(self) -> None:
        tensors = {}
        for key, param in self.trained.items():
            state = self.optimizer.state.get(param, {})
            tensors[key] = param.detach().clone()
            tensors[f"exp-avg/{key}"] = state.get("exp_avg", torch.zeros_like(param))
            tensors[f"exp-avg-sq/{key}"] = state.get("exp_avg_sq", torch.zeros_like(param))
        first = self.optimizer.state.get(next(iter(self.trained.values())), {})
        self.progress["adam-steps"] = int(first["step"]) if first else 0
        self.context.state[STATE_TENSORS] = tensors_to_record(tensors)
        self.context.state[STATE_PROGRESS] = self.progress

    def _optimizer(self) -> torch.optim.Optimizer:
        return round_optimizer(self.trained.values(), self.config, int(self.progress["round"]))

    # -- the work ----------------------------------------------------------------------------
    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """Split step ``step``'s batch: the kept examples in a seeded order, cycling."""
        kept = list(self.progress["kept"])
        seed = run_seed(self.config, self.node.partition_id, int(self.progress["round"]), "split")
        order = torch.randperm(len(kept), generator=torch.Generator().manual_seed(seed)).tolist()
        size = int(self.progress["batch"])
        chosen = [kept[order[(step * size + i) % len(kept)]] for i in range(min(size, len(kept)))]
        return collate([self.encoded[i] for i in chosen], self.tokenizer.pad_token_id)

    def sent_activations(self, step: int, *, noise: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's output for step ``step``'s batch as it leaves the device: clipped and
        noised when ``split.activation-clip`` is set (``noise`` False: the differentiable part
        only, for the backward)."""
        batch = self.batch(step)
        hidden, mask = self.split.head(batch["input_ids"], batch["attention_mask"])
        s = self.config.split
        if s.activation_clip > 0:
            hidden = clipped(hidden, s.activation_clip)
            if noise and s.activation_noise > 0:
                purpose = ("split-activations", self.node.partition_id, self.progress["round"])
                generator = secret_generator(*purpose, step)
                hidden = hidden + noise_like(
                    hidden, s.activation_clip, s.activation_noise, generator
                )
        return hidden, mask

    def activations_reply(self, msg: Message, step: int) -> Message:
        with torch.no_grad():
            hidden, mask = self.sent_activations(step, noise=True)
        arrays = tensors_to_record({sk.ACTIVATIONS: hidden, sk.ATTENTION_MASK: mask.float()})
        return Message(RecordDict({keys.ARRAYS: arrays}), reply_to=msg)

    def local_update(self) -> float:
        """SFPrompt's local-loss steps: the prompt trained through head and tail alone."""
        steps, size = self.config.split.local_steps, int(self.progress["batch"])
        seed = run_seed(self.config, self.node.partition_id, int(self.progress["round"]), "local")
        generator = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(steps):
            chosen = torch.randperm(len(self.encoded), generator=generator)[:size].tolist()
            batch = collate([self.encoded[i] for i in chosen], self.tokenizer.pad_token_id)
            loss = local_loss_terms(self.split, batch).mean_loss()
            self._step(loss)
            losses.append(float(loss.detach()))
        return sum(losses) / len(losses) if losses else float("nan")

    def _step(self, loss: torch.Tensor | None) -> None:
        if loss is not None:
            loss.backward()
        clipped_step(self.optimizer, self.trained.values(), self.config.train.max_grad_norm)


def _step_of(msg: Message) -> tuple[int, int]:
    config = msg.content.config_records[keys.CONFIG]
    return int(config[keys.SERVER_ROUND]), int(config.get(sk.STEP, 0))


def start(msg: Message, context: Context) -> Message:
    """Take the global prompt (or LoRA factors), the local-loss steps and the pruning; send the
    first batch's activations."""
    device = _Device(context)
    server_round, _ = _step_of(msg)
    config, round_config = device.config, msg.content.config_records[keys.CONFIG]
    settings, rank = planned(config, round_config, device.node.partition_id)
    cut = round_config.get(keys.PLANNED_CUT, config.split.cut_layer)
    if isinstance(cut, bool) or not isinstance(cut, int) or not 1 <= cut <= config.split.cut_layer:
        raise ValueError(
            f"the server planned {keys.PLANNED_CUT} = {cut!r}, outside 1..{config.split.cut_layer}"
        )
    received = record_to_tensors(msg.content.array_records[keys.ARRAYS])
    started = time.perf_counter()
    progress = {"round": server_round, "step": 0, "adam-steps": 0, "cut": cut, "rank": rank}
    device.begin(ConfigRecord({**progress, "losses": []}))
    if config.mode == "split":
        set_prompt(device.split.peft_model, received)
    else:
        lora_model(config, rank).load(received)
    device.progress["batch"] = settings.batch_size
    device.optimizer = device._optimizer()
    local = device.local_update()
    # At the planned batch: the pass holds the vocabulary's logits of a batch, as a step does.
    scores = el2n_scores(
        device.split, device.encoded, settings.batch_size, device.tokenizer.pad_token_id
    )
    device.progress["kept"] = keep_hardest(scores, config.split.keep_fraction)
    device.progress["steps"] = settings.steps_for(len(device.progress["kept"]))
    device.progress["local-loss"] = local
    device.progress["seconds"] = time.perf_counter() - started
    device.save()
    return device.activations_reply(msg, 0)


def loss_gradient(msg: Message, context: Context) -> Message:
    """The loss of the server's body output through this device's tail and labels, and its
    gradient at that output."""
    device = _Device(context)
    server_round, step = _step_of(msg)
    device.restore(server_round, step)
    started = time.perf_counter()
    body = record_to_tensors(msg.content.array_records[keys.ARRAYS])[sk.ACTIVATIONS]
    batch = device.batch(step)
    expected = (
        batch["input_ids"].size(0),
        device.split.virtual_tokens + batch["input_ids"].size(1),
    )
    if tuple(body.shape[:2]) != expected or not torch.isfinite(body).all():
        raise ValueError(f"the server's activations for step {step} do not fit its batch")
    body.requires_grad_(True)
    loss = lm_loss_terms(device.split.tail(body), batch["labels"]).mean_loss()
    (gradient,) = torch.autograd.grad(loss, body)
    device.progress["losses"] = [*device.progress["losses"], float(loss.detach())]
    device.progress["seconds"] = float(device.progress["seconds"]) + time.perf_counter() - started
    device.save()
    arrays = tensors_to_record({sk.GRADIENT: gradient})
    return Message(RecordDict({keys.ARRAYS: arrays}), reply_to=msg)


def backward(msg: Message, context: Context) -> Message:
    """Step what the device trains with the gradient at the cut; send the next batch's
    activations, or nothing after the round's last step."""
    device = _Device(context)
    server_round, step = _step_of(msg)
    device.restore(server_round, step)
    started = time.perf_counter()
    gradient = record_to_tensors(msg.content.array_records[keys.ARRAYS])[sk.GRADIENT]
    hidden, _ = device.sent_activations(step, noise=False)
    if gradient.shape != hidden.shape or not torch.isfinite(gradient).all():
        raise ValueError(f"the server's gradient for step {step} does not fit its activations")
    hidden.backward(gradient)
    device._step(None)
    device.progress["step"] = step + 1
    device.progress["seconds"] = float(device.progress["seconds"]) + time.perf_counter() - started
    device.save()
    if step + 1 >= int(device.progress["steps"]):
        return Message(RecordDict({keys.ARRAYS: ArrayRecord()}), reply_to=msg)
    return device.activations_reply(msg, step + 1)


def train(msg: Message, context: Context) -> Message:
    """The round's reply: the prompt (or its blocks' LoRA factors) this node's finished
    exchange trained."""
    device = _Device(context)
    server_round, _ = _step_of(msg)
    progress = context.state.config_records.get(STATE_PROGRESS)
    if progress is None or int(progress["round"]) != server_round:
        raise ValueError(f"no split exchange of round {server_round} finished on this node")
    device.restore(server_round, int(progress["step"]))
    if int(progress["step"]) < int(progress["steps"]):
        raise ValueError(f"the split exchange of round {server_round} is not finished")
    losses = list(progress["losses"])
    values = {
        keys.NUM_EXAMPLES: len(device.encoded),
        keys.PARTITION_ID: device.node.partition_id,
        keys.TRAIN_LOSS: sum(losses) / len(losses),
        keys.TRAIN_STEPS: len(losses),
        keys.TRAIN_SECONDS: float(progress["seconds"]),
        keys.PEAK_MEMORY_MB: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        keys.LORA_RANK: int(progress["rank"]),
    }
    trained = {k: p.detach().clone() for k, p in device.trained.items()}
    upload = tensors_to_record(trained, device.config.wire.dtype)
    metrics = train_metrics(values, device.config.mode, device.config)
    return Message(RecordDict({keys.ARRAYS: upload, keys.METRICS: metrics}), reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    raise PermissionError(
        "mode split: a split device holds only the head and the tail, not the model to "
        "evaluate; the server evaluates on its own test set"
    )
