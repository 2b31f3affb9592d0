"""Settings that are each allowed but do not fit together, refused with one line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from federated.config.data import BUILTIN_DATASETS
from federated.config.lora import LoraSettings
from federated.config.options import ConfigError
from federated.config.privacy import SECTION_MODES
from federated.config.run_config import RunConfig
from federated.config.tracking import check_tracking
from federated.data.encode import PROMPT_FIELD
from federated.data.files import TABLE_SUFFIXES
from federated.model.presets import PRESETS
from federated.model.tasks import (
    TASK_CAUSAL_LM,
    TASK_CLASSIFICATION,
    TASK_CLASSIFICATION_AS_GENERATION,
)
from federated.model.verbalizer import verbalizer_pairs
from federated.privacy.accounting import PrivacyLedger
from federated.privacy.record_count import count_release


def check_combinations(config: RunConfig) -> None:
    train, data, model = config.train, config.data, config.model
    if (train.local_steps > 0) == (train.local_epochs > 0):
        raise ConfigError(
            f"run config 'train.local-steps' = {train.local_steps} and 'train.local-epochs' = "
            f"{train.local_epochs}: set exactly one of them above 0"
        )
    is_table = data.name.endswith(TABLE_SUFFIXES)
    if data.name not in BUILTIN_DATASETS and not is_table:
        raise ConfigError(
            f"run config 'data.name' = {data.name!r}: use chatterbot, wordnet or a .jsonl/.csv path"
        )
    for key, value in (
        ("data.num-classes", data.num_classes),
        ("data.max-per-class", data.max_per_class),
    ):
        if value and data.name != "wordnet":
            raise ConfigError(f"run config '{key}' = {value}: only applies to data.name = wordnet")
    if data.name in BUILTIN_DATASETS and BUILTIN_DATASETS[data.name] != config.task:
        raise ConfigError(
            f"run config 'data.name' = {data.name!r} is a {BUILTIN_DATASETS[data.name]} dataset, "
            f"but model '{model.name}' is set up for {config.task}; "
            "pick a matching model or model.task"
        )
    _check_client_ranks(config.lora)
    _check_verbalized(config)
    if config.simulation.population and (config.dp.record_level or config.secagg.enabled):
        raise ConfigError(
            f"run config 'simulation.population' = {config.simulation.population!r}: the device "
            "simulator does not run with record-level DP (its planned batches and steps would "
            "change the accounted sampling) or SecAgg+ yet"
        )
    _check_zo(config)
    _check_numerics(config)
    if config.wire.dtype != "float32" and config.mode == "zo":
        raise ConfigError(
            f"run config 'wire.dtype' = {config.wire.dtype!r}: applies to mode = lora; mode zo "
            "sends seed indices and scalars (a few KB), which travel as they are"
        )
    _check_privacy(config)
    check_tracking(config.tracking)
    if config.strategy.min_available_nodes < config.strategy.min_train_nodes:
        raise ConfigError(
            f"run config 'strategy.min-available-nodes' = {config.strategy.min_available_nodes}: "
            f"must be >= strategy.min-train-nodes ({config.strategy.min_train_nodes})"
        )


def _check_verbalized(config: RunConfig) -> None:
    model = config.model
    if not config.verbalized:
        for key, value in (("model.prompt", model.prompt), ("model.verbalizer", model.verbalizer)):
            if value:
                raise ConfigError(
                    f"run config '{key}' = {value!r}: only applies to "
                    f"model.task = {TASK_CLASSIFICATION_AS_GENERATION}"
                )
        return
    preset = PRESETS.get(model.name)
    if preset is not None and preset.task != TASK_CAUSAL_LM:
        raise ConfigError(
            f"run config 'model.task' = {model.task!r}: needs a causal LM, and "
            f"'{model.name}' is a {preset.task} preset"
        )
    if model.prompt and PROMPT_FIELD not in model.prompt:
        raise ConfigError(
            f"run config 'model.prompt' = {model.prompt!r}: must contain {PROMPT_FIELD}, where "
            "each example's text goes"
        )
    try:
        verbalizer_pairs(model.verbalizer)
    except ValueError as err:
        raise ConfigError(f"run config 'model.verbalizer' = {model.verbalizer!r}: {err}") from None


SPARSE_SETS = ("sparse", "sensitive")


def _check_hybrid(config: RunConfig) -> None:
    hybrid = config.zo.hybrid
    if not hybrid:
        return
    key = f"run config 'zo.hybrid' = {hybrid!r}"
    if config.mode != "zo":
        raise ConfigError(f"{key}: applies to mode = zo")
    if hybrid.strip() == "head" and (config.task != TASK_CLASSIFICATION or config.verbalized):
        raise ConfigError(
            f"{key}: needs a classification head; this run's model has none"
            + (" (its classes are label words)" if config.verbalized else "")
        )
    if config.dp.record_level:
        raise ConfigError(f"{key}: its first-order steps are not clipped; no record-level DP")
    if config.secagg.enabled:
        raise ConfigError(f"{key}: SecAgg+ sums the seed sums alone; no secagg.enabled")


def _check_frozen_dtype(config: RunConfig) -> None:
    z = config.zo
    if z.frozen_dtype != "float32" and (config.mode != "zo" or z.params not in SPARSE_SETS):
        raise ConfigError(
            f"run config 'zo.frozen-dtype' = {z.frozen_dtype!r}: applies to mode = zo with "
            "zo.params = sparse or sensitive (only then do most weights stay untrained)"
        )


def _check_zo(config: RunConfig) -> None:
    _check_hybrid(config)
    _check_frozen_dtype(config)
    if config.mode != "zo":
        if config.strategy.name == "fedkseed":
            raise ConfigError(
                "run config 'strategy.name' = 'fedkseed': it aggregates seed scalars; set mode = zo"
            )
        return
    if config.train.lr_schedule != "constant":
        raise ConfigError(
            f"run config 'train.lr-schedule' = {config.train.lr_schedule!r}: mode zo needs "
            "constant, because clients rebuild the model by replaying every scalar with one "
            "learning rate"
        )
    if config.strategy.name != "fedkseed":
        raise ConfigError(
            f"run config 'strategy.name' = {config.strategy.name!r}: mode zo aggregates seed "
            "scalars; use strategy.name = fedkseed"
        )
    if config.train.local_steps < 1:
        raise ConfigError(
            "run config 'train.local-steps' = 0: mode zo counts its steps; set it above 0"
        )


def _check_numerics(config: RunConfig) -> None:
    """Precision, k bits and recomputation where the trainer that would use them cannot."""
    train, quantization = config.train, config.model.quantization
    if config.mode == "zo":
        if train.precision != "fp32":
            raise ConfigError(
                f"run config 'train.precision' = {train.precision!r}: mode zo compares two "
                "losses a tiny step apart, a difference below what bf16 and fp16 resolve; "
                "zo.frozen-dtype halves the frozen weights instead"
            )
        if train.gradient_checkpointing:
            raise ConfigError(
                "run config 'train.gradient-checkpointing' = True: mode zo runs no backward "
                "pass, so there is nothing to recompute"
            )
        if quantization != "none" and config.zo.params != "lora":
            raise ConfigError(
                f"run config 'model.quantization' = {quantization!r}: mode zo with zo.params = "
                f"{config.zo.params!r} moves the base weights, which k-bit weights cannot take; "
                "use zo.params = lora"
            )
    if not config.dp.record_level:
        return
    if train.gradient_checkpointing:
        raise ConfigError(
            "run config 'train.gradient-checkpointing' = True: record-level DP computes each "
            "example's gradient from opacus's hooks, which a recomputed forward would run twice"
        )
    if train.precision == "fp16":
        raise ConfigError(
            "run config 'train.precision' = 'fp16': record-level DP clips each example's "
            "gradient, and fp16's loss scaling would clip scaled ones; use bf16"
        )


def _check_privacy(config: RunConfig) -> None:
    dp = config.dp
    if dp.mode == "none":
        return
    if dp.noise_multiplier == 0 and dp.target_epsilon == 0:
        raise ConfigError(
            f"run config 'dp.mode' = {dp.mode!r} needs a noise: set dp.noise-multiplier, or "
            "dp.target-epsilon to derive it for the whole run"
        )
    if dp.record_level:
        _check_record_level(config)
    else:
        _check_client_level(config)
    if dp.distributed_noise:
        _check_distributed(config)


def check_mechanism_options(flat: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """An option of another DP mechanism than the run's would be ignored: refuse it instead.
    ``flat`` is the run config as given, before auto values resolve (they may differ from the
    default in a section the run does not use)."""
    mode = flat["dp.mode"]
    for section, modes in SECTION_MODES.items():
        prefix = f"dp.{section}."
        for key, value in flat.items():
            if key.startswith(prefix) and mode not in modes and value != defaults[key]:
                raise ConfigError(
                    f"run config '{key}' = {value!r}: applies to dp.mode = "
                    f"{' or '.join(repr(m) for m in modes)}, and this run's is {mode!r}"
                )


def _check_record_level(config: RunConfig) -> None:
    dp = config.dp
    if dp.target_epsilon:
        floor = count_release(dp.record.count_noise).epsilon_floor(dp.delta)
        if dp.target_epsilon <= floor:
            raise ConfigError(
                f"run config 'dp.target-epsilon' = {dp.target_epsilon:g}: a client spends "
                f"{floor:.3g} by releasing its noised record count (dp.record.count-noise = "
                f"{dp.record.count_noise:g}) at dp.delta = {dp.delta:g}, the least the RDP "
                "accountant can certify; raise the target, dp.record.count-noise or dp.delta"
            )
    if config.train.local_steps < 1:
        raise ConfigError(
            "run config 'train.local-steps' = 0: record-level DP accounts fixed steps per round; "
            "set it above 0"
        )


def _check_client_level(config: RunConfig) -> None:
    dp = config.dp
    if config.mode == "zo" and config.zo.pro:
        raise ConfigError(
            f"run config 'zo.pro' = True with dp.mode = {dp.mode!r}: FedKSeed-Pro weighs seeds by "
            "each client's own scalars, which client-level DP must not look at; turn one of them "
            "off"
        )
    floor = PrivacyLedger().epsilon_floor(dp.delta)
    if dp.target_epsilon and dp.target_epsilon <= floor:
        raise ConfigError(
            f"run config 'dp.target-epsilon' = {dp.target_epsilon:g}: below "
            f"{floor:.3g}, the least the RDP accountant can certify at dp.delta = {dp.delta:g}; "
            "raise the target or dp.delta"
        )


def _check_distributed(config: RunConfig) -> None:
    key = "run config 'dp.mode' = 'distributed'"
    if not config.secagg.enabled:
        raise ConfigError(
            f"{key}: the clients' noise shares protect the sum only under SecAgg+; set "
            "secagg.enabled"
        )
    if config.train.local_steps < 1:
        raise ConfigError(
            f"{key} with train.local-steps = 0: steps counted from a client's data size would "
            "tell the server its size; set train.local-steps above 0"
        )
    if config.secagg.num_shares < 1.0:
        raise ConfigError(
            f"{key} with secagg.num-shares = {config.secagg.num_shares:g}: a client refuses to "
            "unmask a sum of too few clients, which it can count only when it shares with all; "
            "set secagg.num-shares = 1.0"
        )
    if config.dp.client.adaptive_clip:
        raise ConfigError(
            f"{key} with dp.client.adaptive-clip: the clients' noise is planned for a fixed "
            "bound; turn adaptive clipping off"
        )


def _check_client_ranks(lora: LoraSettings) -> None:
    key = "lora.client-ranks"
    try:
        ranks = lora.ranks()
    except ValueError:
        raise ConfigError(
            f"run config '{key}' = {lora.client_ranks!r}: use comma-separated integers, e.g. 4,8,16"
        ) from None
    for rank in ranks:
        if not 1 <= rank <= lora.rank:
            raise ConfigError(
                f"run config '{key}' = {lora.client_ranks!r}: every rank must be between 1 and "
                f"lora.rank ({lora.rank}), the server's rank"
            )
