"""The run's zeroth-order model in this process: base weights, targets, seed pool, hybrid
modules, and for ``zo.params = sensitive`` the mask that picks the targets (cached per process,
as `federated.model.workspace` caches the rest)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from federated.config import ConfigError, RunConfig
from federated.data.encode import batches
from federated.model.presets import load_tokenizer
from federated.model.workspace import (
    base_arguments,
    base_model,
    corpus_for,
    encode_indices,
    lora_model,
    server_test_indices,
)
from federated.zo.frozen_precision import store_frozen_
from federated.zo.hybrid import hybrid_parameters
from federated.zo.seed_pool import SeedPool
from federated.zo.sensitive import (
    Mask,
    mask_digest,
    sensitive_targets,
    squared_gradients,
    top_entries,
)
from federated.zo.targets import zo_targets
from federated.zo.zo_model import ZoModel

MASK_FILE = "zo_mask.safetensors"


def weights_key(config: RunConfig) -> RunConfig:
    """The config without its ZO rate: the weights at w0, the targets and the mask do not
    depend on it, so finding the rate (``zo_lr_probe``) and using it share one model."""
    return config.with_zo_lr(0.0)


@lru_cache(maxsize=1)
def _zo_model(config: RunConfig) -> ZoModel:
    z = config.zo
    if z.params == "lora":
        # A model of its own, not the cached LoRA one: zeroth-order steps freeze and move its
        # weights, and forgetting it must leave nothing of them behind.
        local = lora_model(config, fresh=True)
        model, tokenizer = local.model, local.tokenizer
    else:
        model = base_model(*base_arguments(config))
        tokenizer = load_tokenizer(config.model.name)
    try:
        hybrid = hybrid_parameters(model, z.hybrid)
    except ValueError as err:
        raise ConfigError(f"run config 'zo.hybrid' = {z.hybrid!r}: {err}") from None
    # A sensitive run's targets wait for its mask (`zo_model`).
    targets = (
        []
        if z.params == "sensitive"
        else _without(zo_targets(model, z.params, sparse_fraction=z.sparse_fraction), hybrid)
    )
    pool = SeedPool.from_run_seed(config.seed, z.pool_size)
    zo = ZoModel(model, tokenizer, targets, pool, lr=z.lr, structure=z.perturbation, hybrid=hybrid)
    if z.params == "sparse":
        _store_frozen(zo, z.frozen_dtype)
    return zo


def _store_frozen(zo: ZoModel, dtype: str) -> None:
    """zo.frozen-dtype: the matrices in ``dtype``, their trained entries float32 beside them."""
    if dtype != "float32":
        zo.targets, zo.frozen_bytes_saved = store_frozen_(
            zo.model, zo.targets, dtype, keep=zo.hybrid.values()
        )


def _without(targets: list, hybrid: dict) -> list:
    """The targets but the hybrid modules' parameters, which train first-order."""
    first_order = {id(p) for p in hybrid.values()}
    return [t for t in targets if id(t.tensor) not in first_order]


def zo_model(config: RunConfig, mask: Mask | None = None) -> ZoModel:
    """The run's zeroth-order model (cached per process) replaying at ``config.zo.lr``; a
    sensitive run's needs its ``mask``. A different mask, or a different rate once seeds were
    replayed, reloads w0."""
    zo = _at_rate(config)
    if config.zo.params != "sensitive":
        return zo
    if mask is None:
        raise ValueError("zo.params = sensitive: the model needs the run's mask")
    digest = mask_digest(mask)
    if zo.mask_digest not in (None, digest):
        forget_zo_model()
        zo = _at_rate(config)
    if zo.mask_digest is None:
        zo.targets = _without(sensitive_targets(zo.model, mask), zo.hybrid)
        _store_frozen(zo, config.zo.frozen_dtype)
        zo.mask_digest = digest
    return zo


def _at_rate(config: RunConfig) -> ZoModel:
    """The cached model replaying at ``config.zo.lr``: seeds replayed at another rate are not
    this rate's weights, so such a model is loaded again at w0."""
    zo = _zo_model(weights_key(config))
    if zo.lr != config.zo.lr and bool(zo.applied.any()):
        forget_zo_model()
        zo = _zo_model(weights_key(config))
    zo.lr = config.zo.lr
    return zo


def forget_zo_model() -> None:
    """Drop the cached zeroth-order model: the next ``zo_model`` loads w0 again."""
    _zo_model.cache_clear()


def calibration_examples(config: RunConfig) -> list[dict[str, list[int]]]:
    """``zo.calibration-examples`` examples of data.name outside the server's test set, drawn by
    the run's seed, encoded."""
    test = set(server_test_indices(config))
    pool = [i for i in range(len(corpus_for(config).examples)) if i not in test]
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(config.seed))
    chosen = sorted(pool[i] for i in order[: config.zo.calibration_examples].tolist())
    return encode_indices(config, load_tokenizer(config.model.name), chosen)


def calibration_batches(config: RunConfig) -> list[dict[str, torch.Tensor]]:
    """The calibration examples in batches of train.batch-size."""
    pad = load_tokenizer(config.model.name).pad_token_id
    return list(
        batches(
            calibration_examples(config), config.train.batch_size, generator=None, pad_token_id=pad
        )
    )


def sensitive_mask(config: RunConfig) -> Mask:
    """The server's mask (computed once per process, whatever the rate)."""
    return _sensitive_mask(weights_key(config))


@lru_cache(maxsize=1)
def _sensitive_mask(config: RunConfig) -> Mask:
    """The server's mask: the one the run being resumed saved in its folder (its sums follow
    that mask), else the ``zo.sparse-fraction`` of matrix entries of largest squared gradient on
    the calibration batches (the hybrid modules aside)."""
    saved = Path(config.resume).expanduser() / MASK_FILE if config.resume else None
    if saved is not None and saved.is_file():
        return {k: v.to(torch.int32) for k, v in load_file(str(saved)).items()}
    # The run's own model, not a second copy: without a mask it has no targets, so it is at w0.
    zo = _zo_model(weights_key(config))
    if zo.mask_digest is not None:
        raise RuntimeError("the sensitive mask is found on the model at w0, before it has one")
    squares = squared_gradients(zo.model, calibration_batches(config), config.task)
    named, hybrid = dict(zo.model.named_parameters()), {id(p) for p in zo.hybrid.values()}
    squares = {k: v for k, v in squares.items() if id(named[k]) not in hybrid}
    return top_entries(squares, config.zo.sparse_fraction)


def save_mask(mask: Mask, folder: Path) -> None:
    save_file({k: v.contiguous() for k, v in mask.items()}, str(folder / MASK_FILE))
