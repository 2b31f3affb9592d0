"""A plain Flower app for the overhead benchmark: Flower's Message API and its own ``FedAvg``,
transformers and peft, and nothing of fedtune.

Each client trains LoRA (rank 8, alpha 16, on q_proj and v_proj) on the same random 2-layer
Llama as fedtune's tiny-llama preset (hidden 64, SmolLM2's 49,152-token vocabulary) for
``local-steps`` AdamW steps of ``batch-size`` examples of 96 random tokens, and reports the
seconds its steps took. ``PLAIN_FLOWER_SETTINGS`` (JSON: clients, rounds, local-steps,
batch-size, result) sets the run; the server writes its rounds' wall time and the clients'
summed step time to the ``result`` file.
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import LlamaConfig, LlamaForCausalLM

SETTINGS_ENV = "PLAIN_FLOWER_SETTINGS"
VOCAB, LENGTH = 49152, 96
torch.set_num_threads(1)  # one CPU per Ray actor, as fedtune's clients


@lru_cache(maxsize=1)
def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    return get_peft_model(LlamaForCausalLM(config), lora)


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    model = _model()
    set_peft_model_state_dict(model, msg.content["arrays"].to_torch_state_dict())
    config = msg.content["config"]
    generator = torch.Generator().manual_seed(int(context.node_config["partition-id"]))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=float(config["lr"]))
    steps, batch = int(config["local-steps"]), int(config["batch-size"])
    model.train()
    started = time.perf_counter()
    for _ in range(steps):
        ids = torch.randint(10, VOCAB, (batch, LENGTH), generator=generator)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    arrays = ArrayRecord(get_peft_model_state_dict(model))
    metrics = MetricRecord({"train-seconds": seconds, "num-examples": steps * batch})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def _sum_seconds(contents: list[RecordDict], weight_key: str) -> MetricRecord:
    return MetricRecord(
        {
            "train-seconds": sum(c["metrics"]["train-seconds"] for c in contents),
            "clients": len(contents),
        }
    )


server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    run = json.loads(os.environ[SETTINGS_ENV])
    clients = int(run["clients"])
    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=clients,
        min_available_nodes=clients,
        train_metrics_aggr_fn=_sum_seconds,
    )
    train_config = ConfigRecord(
        {"lr": 1e-3, "local-steps": int(run["local-steps"]), "batch-size": int(run["batch-size"])}
    )
    started = time.perf_counter()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(get_peft_model_state_dict(_model())),
        num_rounds=int(run["rounds"]),
        train_config=train_config,
    )
    wall = time.perf_counter() - started
    rounds = result.train_metrics_clientapp
    summary = {
        "wall_seconds": wall,
        "client_seconds": sum(float(m["train-seconds"]) for m in rounds.values()),
        "client_rounds": sum(int(m["clients"]) for m in rounds.values()),
    }
    with open(run["result"], "w") as out:
        json.dump(summary, out)
