"""The run configuration: one schema, parsed once from Flower's ``context.run_config``.

Keys follow Flower's LLM examples: kebab-case, dotted by section (``lora.rank``). Every key has a
default here; ``pyproject.toml``'s ``[tool.flwr.app.config]`` repeats them because Flower only
accepts ``--run-config`` overrides of keys it already knows (a test keeps the two equal).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federated.data.files import TABLE_SUFFIXES
from federated.models import PRESETS
from federated.privacy.accounting import PrivacyLedger
from federated.privacy.record_count import count_release
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION

BUILTIN_DATASETS = {"chatterbot": TASK_CAUSAL_LM, "wordnet": TASK_CLASSIFICATION}


class ConfigError(ValueError):
    """A run-config key has a value that is not allowed; the message is one line for the user."""


def option(
    default: Any,
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> Any:
    """A dataclass field that carries its documentation and its allowed range."""
    meta = {"help": help, "choices": choices, "minimum": minimum, "maximum": maximum}
    meta["above"] = above
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelSettings:
    name: str = option(
        "smollm2-135m",
        "A preset (smollm2-135m, minilm-l6, tiny-llama, tiny-bert), a local folder or a hub id.",
    )
    task: str = option(
        "auto",
        "What the model does; auto takes it from the preset or the dataset.",
        choices=("auto", TASK_CAUSAL_LM, TASK_CLASSIFICATION),
    )
    max_length: int = option(96, "Tokens per example after truncation.", minimum=8)


@dataclass(frozen=True)
class DataSettings:
    name: str = option(
        "chatterbot",
        "chatterbot (instruction pairs), wordnet (definition to category), "
        "or a path to your own .jsonl or .csv file.",
    )
    text_column: str = option("text", "Your file's column with the prompt or input text.")
    target_column: str = option("target", "Your file's column with the response (causal LM).")
    label_column: str = option("label", "Your file's column with the class (classification).")
    group_column: str = option("", "Your file's column for the natural partitioner.")
    partitioner: str = option(
        "natural",
        "How examples are split across clients: iid, dirichlet over labels or categories, "
        "or natural (one category per client).",
        choices=("iid", "dirichlet", "natural"),
    )
    dirichlet_alpha: float = option(0.5, "Concentration of the Dirichlet split.", above=0.0)
    test_fraction: float = option(
        0.1,
        "Share of all examples the server keeps as its global test set.",
        above=0.0,
        maximum=0.5,
    )
    held_out_fraction: float = option(
        0.2, "Share of each client's examples kept out of training.", above=0.0, maximum=0.5
    )
    num_classes: int = option(
        0, "wordnet only: keep the N largest categories (0: all 45).", minimum=0
    )
    max_per_class: int = option(
        0, "wordnet only: at most N examples per category (0: all).", minimum=0
    )


@dataclass(frozen=True)
class LoraSettings:
    rank: int = option(8, "LoRA rank r.", minimum=1)
    alpha: float = option(16.0, "LoRA scaling numerator (scale = alpha / r).", above=0.0)
    dropout: float = option(0.05, "Dropout on the LoRA input.", minimum=0.0, maximum=0.9)
    target_modules: str = option(
        "auto",
        "Comma-separated module names to adapt, all-linear, or auto: the preset's attention "
        "query and value projections (all-linear for other models).",
    )
    client_ranks: str = option(
        "",
        "Comma-separated ranks given to clients by partition id, cycling (e.g. 4,8,16); each at "
        "most lora.rank, which stays the server's rank. Empty: every client uses lora.rank. "
        "Every client keeps the scale alpha / lora.rank.",
    )

    @property
    def scale(self) -> float:
        """The LoRA scale shared by every client whatever its rank, so products compare."""
        return self.alpha / self.rank

    def ranks(self) -> tuple[int, ...]:
        """The cycle of client ranks (just lora.rank when client-ranks is empty)."""
        if not self.client_ranks.strip():
            return (self.rank,)
        return tuple(int(part) for part in self.client_ranks.split(","))

    def rank_of(self, partition_id: int) -> int:
        cycle = self.ranks()
        return cycle[partition_id % len(cycle)]

    @property
    def targets(self) -> tuple[str, ...] | None:
        """The module names to adapt; None for auto, resolved where the model is known."""
        if self.target_modules.strip() == "auto":
            return None
        return tuple(name.strip() for name in self.target_modules.split(",") if name.strip())


@dataclass(frozen=True)
class TrainSettings:
    local_steps: int = option(
        5, "Optimizer steps per client per round (0: use local-epochs).", minimum=0
    )
    local_epochs: float = option(
        0.0, "Passes over the client's data per round, if local-steps is 0.", minimum=0.0
    )
    lr: float = option(1e-3, "AdamW learning rate.", above=0.0)
    weight_decay: float = option(0.0, "AdamW weight decay.", minimum=0.0)
    batch_size: int = option(4, "Examples per local step.", minimum=1)
    max_grad_norm: float = option(
        1.0, "Clip the gradient norm of a step to this (0: off).", minimum=0.0
    )
    lr_schedule: str = option(
        "constant",
        "Learning rate across rounds: constant, linear (decays to 0 at the last round) or cosine. "
        "Zeroth-order runs need constant: replay multiplies every scalar by one learning rate.",
        choices=("constant", "linear", "cosine"),
    )

    def lr_at(self, server_round: int, num_rounds: int) -> float:
        """The learning rate of a round (1-based) under the schedule."""
        progress = (server_round - 1) / num_rounds
        if self.lr_schedule == "linear":
            return self.lr * (1.0 - progress)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr


@dataclass(frozen=True)
class ZoSettings:
    params: str = option(
        "full",
        "What zeroth-order steps train: full (every weight), lora (the LoRA factors and a head) "
        "or sparse (the largest-magnitude entries of each matrix, and every vector).",
        choices=("full", "lora", "sparse"),
    )
    perturbation: str = option(
        "dense",
        "dense (every entry random, as FedKSeed) or low-rank (u·vᵀ per matrix: replaying K seeds "
        "becomes one matrix product per matrix).",
        choices=("dense", "low-rank"),
    )
    pool_size: int = option(4096, "K, the candidate seeds shared by the run.", minimum=1)
    lr: float = option(1e-5, "Constant learning rate of the zeroth-order steps.", above=0.0)
    eps: float = option(1e-3, "Perturbation scale of the two-point estimate.", above=0.0)
    sparse_fraction: float = option(
        0.01, "sparse: share of each matrix's entries that train.", above=0.0, maximum=1.0
    )
    pro: bool = option(
        False, "FedKSeed-Pro: sample seeds by the size of their past scalars, not uniformly."
    )
    pro_clip: float = option(
        0.5,
        "FedKSeed-Pro: scalars are clipped to this size before their mean sets a seed's weight.",
        above=0.0,
    )
    downlink: str = option(
        "changes",
        "What the server sends: all K seed sums, or only those that changed since the client "
        "last synced (from zero for a new one), as index-sum pairs or all K if that is smaller.",
        choices=("sums", "changes"),
    )


@dataclass(frozen=True)
class EvalSettings:
    batch_size: int = option(16, "Examples per evaluation batch.", minimum=1)
    max_examples: int = option(
        32,
        "Evaluate on at most N examples (evenly spread) of each held-out and test set (0: all).",
        minimum=0,
    )


@dataclass(frozen=True)
class StrategySettings:
    name: str = option(
        "fedavg",
        "Aggregation strategy; see the README's strategy table.",
        choices=(
            "fedavg", "ffa-lora", "fedsa-lora", "flora",
            "fedex-lora", "flexlora", "lora-fair", "hetlora", "fedkseed",
        ),
    )  # fmt: skip
    fraction_train: float = option(
        1.0, "Share of connected clients sampled to train each round.", above=0.0, maximum=1.0
    )
    fraction_evaluate: float = option(
        1.0,
        "Share of connected clients sampled to evaluate each round (0: none).",
        minimum=0.0,
        maximum=1.0,
    )
    min_train_nodes: int = option(2, "Train with at least this many clients.", minimum=1)
    min_available_nodes: int = option(2, "Wait until this many clients are connected.", minimum=1)
    lora_fair_lambda: float = option(
        0.01,
        "lora-fair: weight of the penalty that keeps the corrected B near the mean B.",
        minimum=0.0,
    )
    lora_fair_solver: str = option(
        "iterative",
        "lora-fair: iterative (the paper's objective, first-order steps) or closed-form "
        "(the ridge least-squares solution of the same problem).",
        choices=("iterative", "closed-form"),
    )
    lora_fair_steps: int = option(200, "lora-fair: steps of the iterative solver.", minimum=1)


@dataclass(frozen=True)
class PrivacySettings:
    record_level: bool = option(
        False,
        "Record-level DP on every client: DP-SGD with opacus for LoRA (Poisson sampling, "
        "per-sample clipping, Gaussian noise); clipped, noised scalar gradients for zo.",
    )
    noise_multiplier: float = option(
        0.0,
        "Noise standard deviation over the clipping bound (0: the smallest that keeps "
        "dp.target-epsilon over every round of the run).",
        minimum=0.0,
    )
    target_epsilon: float = option(
        0.0,
        "A client's budget for the whole run (0: none, then dp.noise-multiplier must be set). "
        "A client whose next round would spend past it does not train.",
        minimum=0.0,
    )
    delta: float = option(1e-5, "The delta of (epsilon, delta)-DP.", above=0.0, maximum=0.1)
    max_grad_norm: float = option(
        1.0,
        "Per-example clipping bound: of the LoRA gradient, or of the zo scalar gradient.",
        above=0.0,
    )
    count_noise: float = option(
        20.0,
        "Std of the Gaussian noise on the record count a record-level DP client releases once "
        "a run; its sampling rate and averaging weight come from that noised count.",
        above=0.0,
    )
    grad_sample_mode: str = option(
        "hooks",
        "How opacus gets per-sample gradient norms: hooks, functorch, or ghost (ghost "
        "clipping: norms without materialising per-sample gradients).",
        choices=("hooks", "functorch", "ghost"),
    )
    client_level: bool = option(
        False,
        "Client-level DP on the server (DP-FedAvg): each client joins a round with probability "
        "strategy.fraction-train (secret Poisson sampling), its update is clipped, Gaussian "
        "noise joins their sum, every round is accounted. Linear strategies only.",
    )
    client_noise_multiplier: float = option(
        0.0,
        "Noise std over the clip bound of client-level DP (0: the smallest that keeps "
        "dp.client-target-epsilon over every round).",
        minimum=0.0,
    )
    client_target_epsilon: float = option(
        0.0,
        "The run's client-level budget (0: none); training stops before a round that would "
        "spend past it.",
        minimum=0.0,
    )
    client_clip_norm: float = option(
        1.0, "L2 bound of one client's update (the start value when adaptive).", above=0.0
    )
    client_adaptive_clip: bool = option(
        False,
        "Adapt the bound each round towards a quantile of the clients' update norms, from a "
        "noised count (Andrew et al., 2021).",
    )
    client_clip_quantile: float = option(
        0.5, "Adaptive clipping: share of clients whose update the bound should not clip.",
        above=0.0, maximum=1.0,
    )  # fmt: skip
    client_clip_lr: float = option(
        0.2, "Adaptive clipping: geometric learning rate of the bound.", above=0.0
    )
    client_count_noise: float = option(
        0.0,
        "Adaptive clipping: noise std of the count of unclipped clients, each counted as +-1/2 "
        "(0: expected clients per round / 20).",
        minimum=0.0,
    )


@dataclass(frozen=True)
class SecAggSettings:
    enabled: bool = option(
        False,
        "SecAgg+: clients mask their updates so that the server learns only their sum "
        "(linear strategies: fedavg, ffa-lora, fedsa-lora's shared A, fedkseed).",
    )
    num_shares: float = option(
        1.0,
        "Neighbours each client secret-shares its keys with, as a share of the sampled clients "
        "(1.0: all, plain SecAgg; less: SecAgg+'s sparse graph).",
        above=0.0,
        maximum=1.0,
    )
    reconstruction_threshold: float = option(
        0.67,
        "Shares needed to rebuild a client's secrets, as a share of its neighbours: more "
        "tolerates fewer dropouts and more corrupted peers.",
        above=0.0,
        maximum=1.0,
    )
    clipping_range: float = option(
        8.0,
        "Each entry of a client's masked update is clipped to +-this before quantization.",
        above=0.0,
    )
    quantization_bits: int = option(
        22, "Bits of each quantized entry (the masks work modulo 2^32).", minimum=8, maximum=26
    )
    max_weight: float = option(
        1000.0,
        "A client's weight (its examples) is capped here and sent masked as weight / max-weight.",
        above=0.0,
    )


@dataclass(frozen=True)
class ServerSettings:
    round_timeout: float = option(3600.0, "Seconds to wait for the replies of a round.", above=0.0)
    max_update_norm: float = option(
        1e4,
        "Reject a reply whose update has an L2 norm above this (a poisoned or diverged client).",
        above=0.0,
    )


@dataclass(frozen=True)
class RunConfig:
    mode: str = option(
        "lora",
        "lora (first-order LoRA training) or zo (zeroth-order, seed-based: FedKSeed).",
        choices=("lora", "zo"),
    )
    num_server_rounds: int = option(3, "Federated rounds.", minimum=1)
    seed: int = option(0, "Seed of the data split, the model init and every client's sampler.")
    run_name: str = option("", "Folder name under output-dir (empty: model-strategy-timestamp).")
    output_dir: str = option(
        "results", "Where runs are written, relative to where flwr run starts the app."
    )
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    zo: ZoSettings = field(default_factory=ZoSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    strategy: StrategySettings = field(default_factory=StrategySettings)
    dp: PrivacySettings = field(default_factory=PrivacySettings)
    secagg: SecAggSettings = field(default_factory=SecAggSettings)
    server: ServerSettings = field(default_factory=ServerSettings)

    @property
    def task(self) -> str:
        """The task from the key, else from the preset, else from the built-in dataset, else LM."""
        if self.model.task != "auto":
            return self.model.task
        if self.model.name in PRESETS:
            return PRESETS[self.model.name].task
        return BUILTIN_DATASETS.get(self.data.name, TASK_CAUSAL_LM)


def _key(prefix: str, name: str) -> str:
    return prefix + name.replace("_", "-")


def iter_options(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, dataclasses.Field]]:
    """Every leaf option as (flat key, field), in declaration order."""
    leaves: list[tuple[str, dataclasses.Field]] = []
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING:  # a section: built by its default_factory
            leaves += iter_options(f.default_factory, _key(prefix, f.name) + ".")
        else:
            leaves.append((_key(prefix, f.name), f))
    return leaves


def default_flat_config() -> dict[str, Any]:
    """The defaults as Flower's flat run config (what pyproject's app config must hold)."""
    return {key: f.default for key, f in iter_options()}


def _check_value(key: str, f: dataclasses.Field, value: Any) -> Any:
    expected = type(f.default)
    meta = f.metadata
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        raise ConfigError(
            f"run config '{key}' = {value!r}: expected {expected.__name__}, "
            f"got {type(value).__name__}"
        )
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"run config '{key}' = {value!r}: must be a finite number")
    if meta["choices"] is not None and value not in meta["choices"]:
        allowed = ", ".join(map(str, meta["choices"]))
        raise ConfigError(f"run config '{key}' = {value!r}: allowed values are {allowed}")
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise ConfigError(f"run config '{key}' = {value!r}: must be >= {meta['minimum']}")
    if meta["maximum"] is not None and value > meta["maximum"]:
        raise ConfigError(f"run config '{key}' = {value!r}: must be <= {meta['maximum']}")
    if meta["above"] is not None and value <= meta["above"]:
        raise ConfigError(f"run config '{key}' = {value!r}: must be > {meta['above']}")
    return value


def _build(cls: type, prefix: str, flat: Mapping[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = _key(prefix, f.name)
        if f.default is dataclasses.MISSING:
            kwargs[f.name] = _build(f.default_factory, key + ".", flat)
        elif key in flat:
            kwargs[f.name] = _check_value(key, f, flat[key])
    return cls(**kwargs)


def parse_run_config(raw: Mapping[str, Any]) -> RunConfig:
    """Validate a flat run config (Flower's ``context.run_config``) into a frozen ``RunConfig``.

    Raises
    ------
    ConfigError
        One line naming the key, the value and what is allowed.
    """
    known = {key for key, _ in iter_options()}
    for key in raw:
        if key not in known:
            close = [k for k in sorted(known) if k.split(".")[-1] == key.split(".")[-1]]
            close = close or difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"run config has unknown key '{key}'{hint}")
    config = _build(RunConfig, "", raw)
    _check_combinations(config)
    return config


def _check_combinations(config: RunConfig) -> None:
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
    if is_table and not Path(data.name).expanduser().is_file():
        raise ConfigError(f"run config 'data.name' = {data.name!r}: no such file")
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
    _check_zo(config)
    _check_privacy(config)
    if config.strategy.min_available_nodes < config.strategy.min_train_nodes:
        raise ConfigError(
            f"run config 'strategy.min-available-nodes' = {config.strategy.min_available_nodes}: "
            f"must be >= strategy.min-train-nodes ({config.strategy.min_train_nodes})"
        )


def _check_zo(config: RunConfig) -> None:
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


def _check_privacy(config: RunConfig) -> None:
    dp = config.dp
    if dp.client_level:
        _check_client_level(config)
    if not dp.record_level:
        return
    if dp.noise_multiplier == 0 and dp.target_epsilon == 0:
        raise ConfigError(
            "run config 'dp.record-level' = True needs a noise: set dp.noise-multiplier, or "
            "dp.target-epsilon to derive it for the whole run"
        )
    if dp.target_epsilon:
        floor = count_release(dp.count_noise).epsilon_floor(dp.delta)
        if dp.target_epsilon <= floor:
            raise ConfigError(
                f"run config 'dp.target-epsilon' = {dp.target_epsilon:g}: a client spends "
                f"{floor:.3g} by releasing its noised record count (dp.count-noise = "
                f"{dp.count_noise:g}) at dp.delta = {dp.delta:g}, the least the RDP accountant "
                "can certify; raise the target, dp.count-noise or dp.delta"
            )
    if config.train.local_steps < 1:
        raise ConfigError(
            "run config 'train.local-steps' = 0: record-level DP accounts fixed steps per round; "
            "set it above 0"
        )


def _check_client_level(config: RunConfig) -> None:
    dp = config.dp
    if dp.client_noise_multiplier == 0 and dp.client_target_epsilon == 0:
        raise ConfigError(
            "run config 'dp.client-level' = True needs a noise: set dp.client-noise-multiplier, "
            "or dp.client-target-epsilon to derive it for the whole run"
        )
    if config.mode == "zo" and config.zo.pro:
        raise ConfigError(
            "run config 'zo.pro' = True with dp.client-level: FedKSeed-Pro weighs seeds by each "
            "client's own scalars, which client-level DP must not look at; turn one of them off"
        )
    floor = PrivacyLedger().epsilon_floor(dp.delta)
    if dp.client_target_epsilon and dp.client_target_epsilon <= floor:
        raise ConfigError(
            f"run config 'dp.client-target-epsilon' = {dp.client_target_epsilon:g}: below "
            f"{floor:.3g}, the least the RDP accountant can certify at dp.delta = {dp.delta:g}; "
            "raise the target or dp.delta"
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


def run_config_to_flat(config: RunConfig) -> dict[str, Any]:
    """The flat form of a parsed config, for summaries and for the config sent to clients."""
    flat: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, _key(prefix, f.name) + ".")
            else:
                flat[_key(prefix, f.name)] = value

    walk(config, "")
    return flat


def config_reference_markdown() -> str:
    """The README's configuration table, generated from the schema so the two cannot drift."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, f in iter_options():
        meta = f.metadata
        if meta["choices"]:
            allowed = ", ".join(f"`{c}`" for c in meta["choices"])
        else:
            bounds = []
            if meta["above"] is not None:
                bounds.append(f"> {meta['above']}")
            if meta["minimum"] is not None:
                bounds.append(f">= {meta['minimum']}")
            if meta["maximum"] is not None:
                bounds.append(f"<= {meta['maximum']}")
            allowed = type(f.default).__name__ + (" " + ", ".join(bounds) if bounds else "")
        rows.append(f"| `{key}` | `{f.default!r}` | {allowed} | {meta['help']} |")
    return "\n".join(rows)


def app_config_toml() -> str:
    """The ``[tool.flwr.app.config]`` table of pyproject.toml, with every default."""
    lines = ["[tool.flwr.app.config]"]
    for key, value in default_flat_config().items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m federated.config``: print the reference table, or check a ``--run-config``."""
    parser = argparse.ArgumentParser(prog="python -m federated.config", description=main.__doc__)
    parser.add_argument("--check", metavar="RUN_CONFIG", help='e.g. "lora.rank=16 train.lr=5e-4"')
    parser.add_argument("--toml", action="store_true", help="print pyproject's app config table")
    args = parser.parse_args(argv)
    if args.toml:
        print(app_config_toml())
        return 0
    if args.check is None:
        print(config_reference_markdown())
        return 0
    from flwr.common.config import parse_config_args  # Flower's own parser of --run-config

    try:
        config = parse_run_config({**default_flat_config(), **parse_config_args([args.check])})
    except ConfigError as err:
        print(err)
        return 2
    print(f"ok: {config.model.name} on {config.data.name}, {config.task}, {config.strategy.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
