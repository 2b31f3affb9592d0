"""What split mode (SFPrompt) runs with, and what it refuses, each with one line."""

from __future__ import annotations

import dataclasses

from federated.config.options import ConfigError
from federated.config.run_config import RunConfig
from federated.config.split import SplitSettings
from federated.model.tasks import TASK_CAUSAL_LM


def check_split(config: RunConfig) -> None:
    s = config.split
    if config.mode != "split":
        for f in dataclasses.fields(SplitSettings):
            value = getattr(s, f.name)
            if value != f.default:
                key = f"split.{f.name.replace('_', '-')}"
                raise ConfigError(f"run config '{key}' = {value!r}: applies to mode = split")
        return
    refusals = (
        (
            config.task != TASK_CAUSAL_LM,
            f"trains a causal LM's soft prompt, and this run's task is {config.task}",
        ),
        (
            config.dp.mode == "record",
            "the server sees the cut-layer activations of every example a device trains on, "
            "which record-level DP-SGD's accountant does not cover; split.activation-noise is "
            "the stated, unaccounted mechanism for them",
        ),
        (config.dp.mode != "none", "client-level and distributed DP do not cover it yet"),
        (config.secagg.enabled, "SecAgg+ would mask the prompt, not the activations, yet"),
        (config.strategy.name != "fedavg", "its prompts are averaged: strategy.name = fedavg"),
        (config.model.quantization != "none", "k-bit base models do not split yet"),
        (config.train.precision != "fp32", "split parts run in fp32 only yet"),
        (config.train.gradient_checkpointing, "the device recomputes its head already"),
        (
            config.train.local_steps < 1,
            "the server counts each device's exchange steps, and a device must not choose them; "
            "set train.local-steps above 0",
        ),
        (
            s.activation_noise > 0 and s.activation_clip == 0,
            "split.activation-noise needs split.activation-clip above 0 (its scale)",
        ),
    )
    for refused, why in refusals:
        if refused:
            raise ConfigError(f"run config 'mode' = 'split': {why}")
