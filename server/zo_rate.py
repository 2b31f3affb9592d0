"""The rate of a zeroth-order run that names none (``zo.lr = 0``): probed by the server before
round 1 on the run's model at w0 (``federated.zo.lr_probe``), then sent to every client with
the sums; a resumed run takes the rate its checkpoint's config holds."""

from __future__ import annotations

from logging import INFO
from typing import Any

import torch
from flwr.common import log

from federated.config import ConfigError, RunConfig
from federated.model.evaluation import evaluate_model
from federated.zo.lr_probe import ProbeError, ProbeResult, probe_lr
from federated.zo.sensitive import Mask
from federated.zo.targets import restore_, snapshot
from federated.zo.trainer import train_zo
from federated.zo.workspace import calibration_examples, weights_key, zo_model


def zo_lr_probe(config: RunConfig, mask: Mask | None = None) -> ProbeResult:
    """``federated.zo.lr_probe`` on the run's model at w0: steps on half the calibration
    examples, the loss on the other half. The hybrid modules stay still: a head's first-order
    progress would hide the damage a rate too large does to the body. A ``ConfigError`` when
    no rate holds."""
    zo = zo_model(weights_key(config), mask)
    if bool(zo.applied.any()):
        raise RuntimeError("the rate is probed on the model at w0, before any seed is replayed")
    z, examples = config.zo, calibration_examples(config)
    if len(examples) < 2:
        raise ConfigError(
            f"run config 'zo.lr' = 0 (auto): data.name leaves {len(examples)} calibration "
            "example(s) outside the test set; the probe needs 2 (or set zo.lr)"
        )
    trained, held_out = examples[::2], examples[1::2]
    pad = zo.tokenizer.pad_token_id
    base = snapshot(zo.targets)

    def train_chunk(lr: float, steps: int, chunk: int) -> None:
        train_zo(
            zo.model,
            zo.targets,
            zo.pool,
            trained,
            config.task,
            steps=steps,
            lr=lr,
            eps=z.eps,
            batch_size=config.train.batch_size,
            structure=z.perturbation,
            pad_token_id=pad,
            generator=torch.Generator().manual_seed(config.seed * 1009 + chunk),
        )

    def loss() -> float:
        result = evaluate_model(
            zo.model, held_out, config.task, batch_size=config.eval.batch_size, pad_token_id=pad
        )
        return result.loss

    def reset() -> None:
        restore_(zo.targets, base)

    try:
        return probe_lr(train_chunk, loss, reset, momentum=z.momentum)
    except ProbeError as err:
        raise ConfigError(f"run config 'zo.lr' = 0 (auto): {err}; set zo.lr") from None


def resolve_zo_lr(
    config: RunConfig, mask: Mask | None, saved: dict[str, Any] | None = None
) -> RunConfig:
    """``config`` with the rate its ZO steps take: its own, the resumed run's (``saved``, the
    checkpoint's flat config), or the probe's."""
    if config.mode != "zo" or config.zo.lr > 0:
        return config
    if saved is not None and saved.get("zo.lr"):
        return config.with_zo_lr(float(saved["zo.lr"]))
    probe = zo_lr_probe(config, mask)
    for trial in probe.trials:
        log(
            INFO,
            "zo.lr probe: %.1e %s (calibration loss %s)",
            trial.lr,
            "held" if trial.held else "failed",
            " -> ".join(f"{loss:.4g}" for loss in trial.losses),
        )
    log(
        INFO, "zo.lr = 0 (auto): %.3g, below %.1e, the largest rate that held", probe.lr, probe.edge
    )
    return config.with_zo_lr(probe.lr)
