"""A split device's round begins on the device alone (the real ClientApp handler, a Flower
Context): SFPrompt's local-loss steps move the prompt before any exchange, the pruning keeps the
examples the prompt those steps left scores hardest (EL2N), and only kept examples cross the
cut, step after step."""

from __future__ import annotations

import math

import torch
from flwr.app import ConfigRecord, Context, RecordDict

from client.node_config import node_settings
from client.node_records import node_records
from client.split_round import STATE_PROGRESS, STATE_TENSORS, _Device, start
from federated.config import parse_run_config
from federated.model.presets import load_tokenizer
from federated.model.workspace import encode_records
from federated.protocol import message_keys as keys
from federated.protocol import split_keys as sk
from federated.protocol.wire import record_to_tensors, tensors_to_record
from federated.split.local_update import el2n_scores, keep_hardest
from federated.split.parts import SplitModel
from federated.split.prompt_model import PROMPT_KEY, get_prompt, set_prompt
from federated.split.split_workspace import split_model
from tests.messages import message

RUN = {
    "model.name": "tiny-llama",
    "mode": "split",
    "split.cut-layer": 1,
    "split.local-steps": 2,
    "split.keep-fraction": 0.25,
    "train.batch-size": 4,
    "train.local-steps": 5,
    "train.lr": 0.05,
    "data.partitioner": "iid",
}
NODE = {"partition-id": 0, "num-partitions": 60}  # a few dozen examples: quick to score


def test_the_round_starts_with_local_steps_and_sends_only_the_kept_examples() -> None:
    config = parse_run_config(RUN)
    model = split_model(config).peft_model
    sent = get_prompt(model)
    content = RecordDict(
        {
            keys.ARRAYS: tensors_to_record(sent),
            keys.CONFIG: ConfigRecord({keys.SERVER_ROUND: 1, keys.PLANNED_CUT: 1}),
        }
    )
    context = Context(1, 1, dict(NODE), RecordDict(), dict(RUN))
    reply = start(message(content, message_type=f"train.{sk.START}"), context)

    progress = context.state.config_records[STATE_PROGRESS]
    after = record_to_tensors(context.state.array_records[STATE_TENSORS])[PROMPT_KEY]
    # The local-loss steps moved the prompt before the first crossing.
    assert not torch.equal(after, sent[PROMPT_KEY]) and math.isfinite(progress["local-loss"])

    # Pruning by its definition, with the prompt the local steps left.
    records, _ = node_records(config, node_settings(context))
    tokenizer = load_tokenizer(config.model.name)
    encoded = encode_records(config, tokenizer, records)
    set_prompt(model, {PROMPT_KEY: after})
    scores = el2n_scores(SplitModel(model, 1), encoded, 4, tokenizer.pad_token_id)
    kept = list(progress["kept"])
    assert kept == keep_hardest(scores, 0.25)
    assert 0 < len(kept) < len(encoded) / 2

    # Every step's batch is made of kept examples, and the first step's crossed the cut.
    by_ids: dict[tuple[int, ...], set[int]] = {}
    for i, example in enumerate(encoded):
        by_ids.setdefault(tuple(example["input_ids"]), set()).add(i)
    device = _Device(context)
    device.progress = progress
    for step in range(int(progress["steps"])):
        batch = device.batch(step)
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
            assert by_ids[tuple(ids[mask.bool()].tolist())] & set(kept), step
        if step == 0:
            sent_rows = record_to_tensors(reply.content.array_records[keys.ARRAYS])
            assert sent_rows[sk.ACTIVATIONS].shape[0] == batch["input_ids"].shape[0]
