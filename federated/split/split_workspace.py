"""The split model a process serves its runs with: built once per settings and cached, as
``federated.model.workspace`` builds the LoRA model (a Ray actor serves many devices in turn);
every message sets its prompt first."""

from __future__ import annotations

from functools import lru_cache

from federated.config import ModelSettings, RunConfig, SplitSettings
from federated.model.numerics import Numerics
from federated.model.workspace import base_model, device_of, numerics_of
from federated.split.parts import SplitModel
from federated.split.prompt_model import with_soft_prompt
from federated.tasks import TASK_CAUSAL_LM


@lru_cache(maxsize=2)
def _split_model(
    model: ModelSettings, split: SplitSettings, seed: int, numerics: Numerics, device: str
) -> SplitModel:
    base = base_model(model, TASK_CAUSAL_LM, None, seed, None, numerics, device)
    base.requires_grad_(False)
    prompted = with_soft_prompt(base, split.prompt_length, seed)
    prompted.eval()  # no dropout: a device recomputes its head's forward for the backward
    return SplitModel(prompted, split.cut_layer)


def split_model(config: RunConfig) -> SplitModel:
    """The run's model cut at ``split.cut-layer``, behind its seeded initial prompt."""
    return _split_model(
        config.model, config.split, config.seed, numerics_of(config), device_of(config)
    )
