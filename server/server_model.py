"""The server's copy of the global model: it tests each round's model and saves the final one."""

from __future__ import annotations

import json
from logging import INFO
from pathlib import Path

import torch
from flwr.common import log
from safetensors.torch import save_file

from federated.config import RunConfig
from federated.model.adapter_files import save_global_adapter
from federated.model.evaluation import EvalResult, evaluate_model
from federated.model.workspace import encode_indices, lora_model, server_test_indices
from federated.protocol import message_keys as keys
from federated.zo.hybrid import load_hybrid_
from federated.zo.sensitive import Mask
from federated.zo.workspace import MASK_FILE, sensitive_mask, zo_model
from strategies.global_model import GlobalModel


def run_mask(config: RunConfig) -> Mask | None:
    """zo.params = sensitive: the entries that train (computed once per process)."""
    return sensitive_mask(config) if config.zo.params == "sensitive" else None


def model_files(config: RunConfig) -> tuple[str, ...]:
    """What the run saves of its final model, in its folder."""
    if config.mode != "zo":
        return ("adapter",)
    mask = (MASK_FILE,) if config.zo.params == "sensitive" else ()
    return ("zo_sums.safetensors", "zo_model.json", *mask)


class ServerModel:
    """The global model loaded into a model the server can run, with the server's test set."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.zo = zo_model(config, run_mask(config)) if config.mode == "zo" else None
        if self.zo is not None and self.zo.frozen_bytes_saved:
            log(
                INFO,
                "zo.frozen-dtype %s: the model's weights take %.1f MB less on each device",
                config.zo.frozen_dtype,
                self.zo.frozen_bytes_saved / 2**20,
            )
        self.local = None if self.zo else lora_model(config)
        self.tokenizer = self.zo.tokenizer if self.zo else self.local.tokenizer
        indices = server_test_indices(config)
        self.test_set = encode_indices(
            config, self.tokenizer, indices, limit=config.eval.max_examples
        )

    def load(self, model: GlobalModel) -> torch.nn.Module:
        if self.zo:
            self.zo.load(model.trainable[keys.SEED_SUMS])
            load_hybrid_(self.zo.hybrid, model.trainable)
            return self.zo.model
        self.local.load(model.trainable, model.base_delta)
        return self.local.model

    def evaluate(self, model: GlobalModel) -> EvalResult:
        return evaluate_model(
            self.load(model),
            self.test_set,
            self.config.task,
            batch_size=self.config.eval.batch_size,
            pad_token_id=self.tokenizer.pad_token_id,
            precision=self.config.train.precision,
        )

    def save(self, model: GlobalModel, folder: Path) -> None:
        """The adapter in peft's format (LoRA), or the seed sums and how to replay them (zo)."""
        self.load(model)
        if self.local:
            save_global_adapter(self.local, model.base_delta, folder / "adapter")
            return
        z = self.config.zo
        # The seed sums, and the hybrid modules' values under their wire keys.
        save_file(model.trainable, str(folder / "zo_sums.safetensors"))
        recipe = {
            "model": self.config.model.name,
            "seed": self.config.seed,
            "pool-size": z.pool_size,
            "params": z.params,
            "perturbation": z.perturbation,
            "lr": z.lr,
            "sparse-fraction": z.sparse_fraction,
            "hybrid": z.hybrid,
        }
        (folder / model_files(self.config)[1]).write_text(json.dumps(recipe, indent=2) + "\n")
