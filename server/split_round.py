"""The server's side of a split round: it leads each sampled split device through the exchange
of ``federated.protocol.split_keys``, all devices in step, runs the body on their activations
and returns the gradients. A device that stops answering (or answers what does not fit) leaves
the round at that point: its own work is lost, the others' goes on. The round's train messages
then collect what the devices that finished trained, as any round's replies.

In mode = split the devices train a prompt and the body is frozen. A split device in a LoRA run
trains its blocks' factors; the server trains the body's factors on its behalf, from the global
factors the device was sent, with tensors and an AdamW of the device's own, and completes the
device's reply with them before the reply is judged: the strategy sees one LoRA update.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging import WARNING

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from federated.config import RunConfig
from federated.model.local_model import factors_at_rank
from federated.protocol import message_keys as keys
from federated.protocol import split_keys as sk
from federated.protocol.wire import record_to_tensors, tensors_to_record
from federated.split.parts import SplitModel
from federated.split.round_optimizer import clipped_step, round_optimizer
from server.exchange import Exchange, exchange, progress

ReplyCheck = Callable[[Message], str | None]


def is_split(message: Message, config: RunConfig) -> bool:
    """Whether ``message``'s node trains by split learning this round."""
    planned = message.content.config_records[keys.CONFIG].get(keys.PLANNED_MODE, config.mode)
    return planned == "split"


@dataclass
class SplitOutcome:
    """What a round's split exchange left: the train messages of the devices that finished,
    the bytes each node moved in it, why the others left, and (LoRA run) the body factors the
    server trained for each finished device."""

    finished: list[Message]
    exchange: Exchange
    left: dict[int, str]
    body: dict[int, dict[str, torch.Tensor]]

    def completing(self, check: ReplyCheck, wire: str) -> ReplyCheck:
        """``check``, after a split device's reply in a LoRA run takes, in place, the body
        factors the server trained for it (its own for any key the device had no business
        sending); ``wire``: the run's wire dtype, as the device sent its own."""

        def complete(reply: Message) -> str | None:
            body = self.body.get(reply.metadata.src_node_id)
            if body and not reply.has_error():  # an error reply is ``check``'s to name
                try:
                    own = record_to_tensors(reply.content.array_records[keys.ARRAYS])
                except (KeyError, ValueError, TypeError) as err:
                    return f"no readable factors ({err})"
                content = RecordDict(dict(reply.content))
                content[keys.ARRAYS] = tensors_to_record({**own, **body}, wire)
                reply.content = content
            return check(reply)

        return complete


class _SplitRound:
    def __init__(
        self,
        grid: Grid,
        split: SplitModel,
        config: RunConfig,
        server_round: int,
        partition_of: Mapping[int, int],
    ):
        self.grid, self.split, self.config, self.round = grid, split, config, server_round
        self.partition_of = partition_of
        self.total = Exchange()
        self.left: dict[int, str] = {}  # node -> why it left the exchange
        self.step = 0
        self.factors: dict[int, dict[str, torch.Tensor]] = {}  # node -> its body's factors
        self.optimizers: dict[int, torch.optim.Optimizer] = {}

    def _send(self, action: str, contents: dict[int, RecordDict]) -> dict[int, Message]:
        messages = [
            Message(content=c, dst_node_id=node, message_type=f"train.{action}")
            for node, c in contents.items()
        ]
        ex = exchange(self.grid, messages, timeout=self.config.server.round_timeout)
        for node, sent in ex.bytes_down.items():
            self.total.bytes_down[node] = self.total.bytes_down.get(node, 0) + sent
        for node, got in ex.bytes_up.items():
            self.total.bytes_up[node] = self.total.bytes_up.get(node, 0) + got
        answered = {}
        for reply in ex.replies:
            node = reply.metadata.src_node_id
            if reply.has_error():
                self._leave(node, action, f"it failed: {reply.error.reason[:200]}")
            else:
                answered[node] = reply
        for node in ex.timed_out:
            self._leave(node, action, "no reply before server.round-timeout")
        for node, reason in ex.unreachable.items():
            self._leave(node, action, reason)
        return answered

    def _leave(self, node: int, action: str, why: str) -> None:
        self.left[node] = f"out of the split exchange at step {self.step} ({action}): {why}"
        log(WARNING, "    node %d %s", node, self.left[node])

    def _cut(self, round_config: ConfigRecord) -> int:
        return int(round_config.get(keys.PLANNED_CUT, self.config.split.cut_layer))

    def _start_body(self, node: int, message: Message, view: SplitModel) -> None:
        """The body factors the server trains for ``node`` (LoRA run): the global ones it sent
        the device, at the device's rank."""
        trained = view.body_trainable()
        if not trained:
            return
        round_config = message.content.config_records[keys.CONFIG]
        partition = self.partition_of.get(node, 0)
        rank = int(round_config.get(keys.PLANNED_RANK, self.config.lora.rank_of(partition)))
        sent = record_to_tensors(message.content.array_records[keys.ARRAYS])
        start = factors_at_rank({k: sent[k] for k in trained}, rank)
        self.factors[node] = {k: t.float().clone().requires_grad_(True) for k, t in start.items()}
        self.optimizers[node] = round_optimizer(
            self.factors[node].values(), self.config, self.round
        )

    def _step_body(self, node: int, gradients: tuple[torch.Tensor, ...]) -> None:
        """One AdamW step of ``node``'s body factors, clipped as the device clips its own."""
        params = list(self.factors[node].values())
        for param, gradient in zip(params, gradients, strict=True):
            param.grad = gradient
        clipped_step(self.optimizers[node], params, self.config.train.max_grad_norm)

    def _content(self, step: int, tensors: dict[str, torch.Tensor]) -> RecordDict:
        config = ConfigRecord({keys.SERVER_ROUND: self.round, sk.STEP: step})
        return RecordDict({keys.ARRAYS: tensors_to_record(tensors), keys.CONFIG: config})

    @staticmethod
    def _arrays(reply: Message) -> dict[str, torch.Tensor] | str:
        """The tensors a device's reply carries, or why it carries none that can be read."""
        try:
            return record_to_tensors(reply.content.array_records[keys.ARRAYS])
        except (KeyError, ValueError, TypeError) as err:
            return f"no readable tensors ({err})"

    def _activations(
        self, reply: Message, view: SplitModel
    ) -> tuple[torch.Tensor, torch.Tensor] | str:
        """A device's cut-layer activations and mask, or why they cannot be used."""
        tensors = self._arrays(reply)
        if isinstance(tensors, str):
            return tensors
        if sk.ACTIVATIONS not in tensors or sk.ATTENTION_MASK not in tensors:
            return "no activations"
        hidden, mask = tensors[sk.ACTIVATIONS], tensors[sk.ATTENTION_MASK]
        hidden_size = self.split.lm.config.hidden_size
        longest = view.virtual_tokens + self.config.model.max_length
        fits = (
            hidden.dim() == 3
            and 1 <= hidden.size(0) <= self.config.train.batch_size
            and hidden.size(1) <= longest
            and hidden.size(2) == hidden_size
            and tuple(mask.shape) == tuple(hidden.shape[:2])
            and hidden.dtype == mask.dtype == torch.float32
        )
        if not fits:
            return f"activations of shape {tuple(hidden.shape)} do not fit the model's cut"
        if not torch.isfinite(hidden).all() or not ((mask == 0) | (mask == 1)).all():
            return "activations with non-finite values or a mask other than 0/1"
        return hidden, mask.long()

    def run(self, sent: list[Message]) -> list[Message]:
        """The round's train messages of the devices that finished their exchange."""
        by_node = {m.metadata.dst_node_id: m for m in sent}
        plans = {n: m.content.config_records[keys.CONFIG] for n, m in by_node.items()}
        # Each device's body starts after its own cut: the device simulator plans it per device.
        views = {n: SplitModel(self.split.peft_model, self._cut(c)) for n, c in plans.items()}
        for node, message in by_node.items():
            self._start_body(node, message, views[node])
        # A device answers with activations while it has steps left; past its planned steps
        # it would hold the round open forever.
        steps = {
            n: int(c.get(keys.PLANNED_STEPS, self.config.train.local_steps))
            for n, c in plans.items()
        }
        log_progress = progress("split")
        active = self._send(sk.START, {n: m.content for n, m in by_node.items()})
        while active:
            cut, body = {}, {}
            for node, reply in active.items():
                if self.step >= steps[node]:
                    self._leave(node, "its activations", f"more than its {steps[node]} steps")
                    continue
                got = self._activations(reply, views[node])
                if isinstance(got, str):
                    self._leave(node, "its activations", got)
                    continue
                hidden = got[0].requires_grad_(True)
                cut[node] = hidden
                body[node] = views[node].body(hidden, got[1], self.factors.get(node))
            losses = self._send(
                sk.LOSS,
                {
                    n: self._content(self.step, {sk.ACTIVATIONS: z.detach()})
                    for n, z in body.items()
                },
            )
            down = {}
            for node, reply in losses.items():
                tensors = self._arrays(reply)
                gradient = None if isinstance(tensors, str) else tensors.get(sk.GRADIENT)
                if (
                    gradient is None
                    or gradient.shape != body[node].shape
                    or gradient.dtype != body[node].dtype
                ):
                    self._leave(node, "its loss gradient", "it does not fit the activations")
                    continue
                if not torch.isfinite(gradient).all():
                    self._leave(node, "its loss gradient", "non-finite values")
                    continue
                params = list(self.factors.get(node, {}).values())
                down[node], *grads = torch.autograd.grad(body[node], [cut[node], *params], gradient)
                if params:
                    self._step_body(node, tuple(grads))
            answered = self._send(
                sk.BACKWARD,
                {n: self._content(self.step, {sk.GRADIENT: g}) for n, g in down.items()},
            )
            self.step += 1
            # An empty record: the device's last step; anything else is its next activations.
            active = {n: r for n, r in answered.items() if self._arrays(r) != {}}
            if finished := len(answered) - len(active):
                log_progress(finished, len(by_node))
        return [by_node[n] for n in by_node if n not in self.left]


def split_train_messages(
    grid: Grid,
    sent: list[Message],
    split: SplitModel,
    config: RunConfig,
    round_nodes: tuple[int, Mapping[int, int]],
) -> SplitOutcome:
    """Lead ``sent``'s split devices through the round's exchange; ``round_nodes``: the round,
    and the partition each node holds (for a device's LoRA rank)."""
    server_round, partition_of = round_nodes
    exchange_round = _SplitRound(grid, split, config, server_round, partition_of)
    finished = exchange_round.run(sent)
    done = {m.metadata.dst_node_id for m in finished}
    body = {
        n: {k: t.detach() for k, t in factors.items()}
        for n, factors in exchange_round.factors.items()
        if n in done
    }
    return SplitOutcome(finished, exchange_round.total, exchange_round.left, body)
