"""A run's model as a module that runs: the base model with the run's LoRA adapter (and the base
delta some strategies fold into the frozen weights), behind a split run's soft prompt, or with
a zeroth-order run's seeds replayed (and its hybrid head). The server tests and saves through
it; ``fedtune generate``, ``evaluate`` and ``export`` load a run's checkpoint into it."""

from __future__ import annotations

from typing import Any

import torch

from federated.config import RunConfig
from federated.model.local_model import LocalModel
from federated.model.presets import load_tokenizer
from federated.model.workspace import lora_model
from federated.protocol import message_keys as keys
from federated.protocol.global_model import GlobalModel, zo_initial_model
from federated.split.parts import SplitModel
from federated.split.prompt_model import set_prompt
from federated.split.split_workspace import split_model
from federated.zo.hybrid import hybrid_state, load_hybrid_
from federated.zo.sensitive import Mask
from federated.zo.workspace import ZoModel, sensitive_mask, zo_model


def run_mask(config: RunConfig) -> Mask | None:
    """zo.params = sensitive: the entries that train (computed once per process)."""
    return sensitive_mask(config) if config.zo.params == "sensitive" else None


class TrainedModel:
    """The run's model architecture, ready to take any of its global models."""

    def __init__(self, config: RunConfig, mask: Mask | None = None) -> None:
        self.config = config
        self.zo: ZoModel | None = None
        self.local: LocalModel | None = None
        self.split: SplitModel | None = None
        if config.mode == "zo":
            self.zo = zo_model(config, mask if mask is not None else run_mask(config))
        elif config.mode == "split":
            self.split = split_model(config)
        else:
            self.local = lora_model(config)
        self.tokenizer: Any = load_tokenizer(config.model.name)
        # The model before any round: the base model for LoRA (every B factor zero), w0 for
        # zeroth-order, the seeded prompt for split; the run's seeded heads and hybrid modules
        # as the run started them.
        if self.zo:
            self.initial = zo_initial_model(config.zo.pool_size, hybrid_state(self.zo.hybrid))
        elif self.split:
            self.initial = GlobalModel(dict(self.split.initial))
        else:
            self.initial = GlobalModel(dict(self.local.initial))

    @property
    def split_view(self) -> SplitModel:
        """The model as split devices and the server share it: behind the prompt in mode =
        split, with the LoRA adapter (split devices in a LoRA run), cut at split.cut-layer."""
        if self.split is not None:
            return self.split
        return SplitModel(self.local.model, self.config.split.cut_layer)

    def load(self, model: GlobalModel) -> torch.nn.Module:
        """The module with ``model``'s tensors in it (seeds replayed, for zeroth-order)."""
        if self.zo:
            self.zo.load(model.trainable[keys.SEED_SUMS])
            load_hybrid_(self.zo.hybrid, model.trainable)
            return self.zo.model
        if self.split:
            set_prompt(self.split.peft_model, model.trainable)
            return self.split.peft_model
        self.local.load(model.trainable, model.base_delta)
        return self.local.model
