"""What split learning runs with (mode = split, SFPrompt, or split devices in a LoRA run:
simulation.split-fallback), and what it refuses, each with one line."""

from __future__ import annotations

import dataclasses

from federated.config.options import ConfigError
from federated.config.run_config import RunConfig
from federated.config.split import SplitSettings
from federated.tasks import TASK_CAUSAL_LM


def check_split(config: RunConfig) -> None:
    s = config.split
    fallback = config.simulation.split_fallback
    if fallback and config.mode != "lora":
        raise ConfigError(
            f"run config 'simulation.split-fallback' = true: applies to mode = lora; in mode = "
            f"{config.mode} every device trains the same way"
        )
    if fallback and not config.simulation.population:
        raise ConfigError(
            "run config 'simulation.split-fallback' = true: the device simulator plans which "
            "devices split; set simulation.population"
        )
    if config.mode != "split":
        for f in dataclasses.fields(SplitSettings):
            value = getattr(s, f.name)
            applies = fallback and f.name != "prompt_length"  # no prompt in a LoRA run
            if value != f.default and not applies:
                key = f"split.{f.name.replace('_', '-')}"
                where = "mode = split" + ("" if f.name == "prompt_length" else " or split devices")
                raise ConfigError(f"run config '{key}' = {value!r}: applies to {where}")
        if not fallback:
            return
    key = "'mode' = 'split'" if config.mode == "split" else "'simulation.split-fallback' = true"
    refusals = (
        (
            config.task != TASK_CAUSAL_LM,
            f"split learning trains a causal LM, and this run's task is {config.task}",
        ),
        (
            config.dp.mode == "record",
            "the server sees the cut-layer activations of every example a device trains on, "
            "which record-level DP-SGD's accountant does not cover; split.activation-noise is "
            "the stated, unaccounted mechanism for them",
        ),
        (config.dp.mode != "none", "client-level and distributed DP do not cover it yet"),
        (config.secagg.enabled, "SecAgg+ would mask the update, not the activations, yet"),
        (
            config.mode == "split" and config.strategy.name != "fedavg",
            "its prompts are averaged: strategy.name = fedavg",
        ),
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
            raise ConfigError(f"run config {key}: {why}")
