"""Strategies by the name the run config uses (``strategy.name``), built from a run config and
wrapped in what the config adds to any strategy that fits: client-level or distributed DP, or
robust aggregation. A strategy's own options (its ``options`` dataclass) are checked here, as
``strategy.<name>.<option>``: the run config passes them through, for a client has no strategies
to check them against."""

from __future__ import annotations

from typing import Any

from federated.config import ConfigError, RunConfig, build_section, iter_options, unknown_key
from federated.protocol.global_model import GlobalModel
from federated.secagg.masking import rounding_margin, rounding_problem
from strategies.client_dp import ClientLevelDp
from strategies.client_dp_strategy import ClientLevelDpStrategy
from strategies.distributed_dp import DistributedClientDp, update_dimension
from strategies.distributed_dp_strategy import DistributedDpStrategy
from strategies.fedavg import FedAvgLora
from strategies.federated_strategy import FederatedStrategy
from strategies.fedex_lora import FedExLora
from strategies.fedkseed import FedKSeed
from strategies.fedsa_lora import FedSaLora
from strategies.ffa_lora import FfaLora
from strategies.flexlora import FlexLora
from strategies.flora import FLoRA
from strategies.hetlora import HetLora
from strategies.lora_fair import LoraFair
from strategies.partition_sampling import PartitionSampler
from strategies.robust_strategy import RobustAggregation
from strategies.strategy_wrapper import Strategy

STRATEGIES: dict[str, type[FederatedStrategy]] = {}


def register(cls: type[FederatedStrategy]) -> type[FederatedStrategy]:
    if cls.name in STRATEGIES:
        raise ValueError(f"strategy name '{cls.name}' is registered twice")
    STRATEGIES[cls.name] = cls
    return cls


for _cls in (
    FedAvgLora,
    FfaLora,
    FedSaLora,
    FLoRA,
    FedExLora,
    FlexLora,
    LoraFair,
    HetLora,
    FedKSeed,
):
    register(_cls)


def options_prefix(name: str) -> str:
    """Where the options of strategy ``name`` sit in the run config."""
    return f"strategy.{name}."


def option_defaults() -> dict[str, Any]:
    """Every registered strategy's options by run-config key, with its default: what pyproject's
    app config holds for them, since Flower takes no key it does not hold."""
    return {
        key: f.default
        for name, cls in STRATEGIES.items()
        if cls.options is not None
        for key, f in iter_options(cls.options, options_prefix(name))
    }


def strategy_options(config: RunConfig) -> Any:
    """The options of the run's strategy from its ``strategy.<name>.<option>`` keys, typed and
    checked as every option is; None for a strategy that declares none.

    Raises
    ------
    ConfigError
        For a ``strategy.name`` that is not registered, a key no registered strategy has, the
        option of another strategy set to other than its default (Flower hands every run all of
        pyproject's), or a value the option does not allow.
    """
    name = config.strategy.name
    if name not in STRATEGIES:
        raise ConfigError(
            f"run config 'strategy.name' = {name!r}: allowed values are the registered "
            f"strategies, {', '.join(STRATEGIES)}"
        )
    defaults, given = option_defaults(), config.strategy.options
    for key, value in given.items():
        if key not in defaults:
            raise unknown_key(key, [*defaults, *(k for k, _ in iter_options())])
        owner = key.split(".")[1]  # strategy.<name>.<option>
        if owner != name and value != defaults[key]:
            raise ConfigError(
                f"run config '{key}' = {value!r}: applies to strategy.name = {owner!r}, and this "
                f"run's is {name!r}"
            )
    options = STRATEGIES[name].options
    return None if options is None else build_section(options, options_prefix(name), given)


def _needs_linear(cls: type[FederatedStrategy], setting: str, why: str) -> None:
    if not cls.linear:
        linear = ", ".join(name for name, c in STRATEGIES.items() if c.linear)
        raise ConfigError(
            f"run config {setting} with strategy '{cls.name}': {why}; use one of {linear}"
        )


def _check_robust(config: RunConfig, cls: type[FederatedStrategy]) -> None:
    method = config.robust.method
    if method == "none":
        return
    setting = f"'robust.method' = {method!r}"
    _needs_linear(cls, setting, "it replaces a mean of client deltas, and this strategy has none")
    for enabled, what in (
        (config.dp.client_level, "client-level DP accounts a clipped sum plus noise, not this"),
        (config.secagg.enabled, "secure aggregation gives the server only the sum"),
    ):
        if enabled:
            raise ConfigError(f"run config {setting}: {what}; set robust.method = 'none'")


def _rounding_margin(config: RunConfig, strategy: FederatedStrategy) -> float:
    """Under SecAgg+ with client-level DP, how far rounding can move a client's clipped update
    (0 otherwise); a quantization that leaves a client less than half its clip bound is
    refused."""
    if not config.secagg.enabled:
        return 0.0
    s, entries = config.secagg, update_dimension(strategy, config)
    problem = rounding_problem(
        entries, s.clipping_range, s.quantization_bits, config.dp.client.clip_norm, keep=0.5
    )
    if problem:
        raise ConfigError(
            f"run config 'secagg.quantization-bits' = {s.quantization_bits}: {problem}"
        )
    return rounding_margin(entries, s.clipping_range, s.quantization_bits)


def check_strategy(config: RunConfig) -> Any:
    """The run's strategy options (``strategy_options``), once the strategy is one the run
    config can serve: its options, mixed ranks, DP mode, robust method and SecAgg+ are read
    from the config alone, so a run refuses them before its model loads.

    Raises
    ------
    ConfigError
        When the strategy or its options are not allowed, or it cannot serve the configured
        clients (mixed ranks it cannot combine) or mechanisms (non-linear aggregation).
    """
    options = strategy_options(config)
    cls = STRATEGIES[config.strategy.name]
    ranks = set(config.lora.ranks())
    if ranks != {config.lora.rank} and not cls.mixed_ranks:
        mixed = ", ".join(name for name, c in STRATEGIES.items() if c.mixed_ranks)
        raise ConfigError(
            f"run config 'lora.client-ranks' = {config.lora.client_ranks!r}: strategy "
            f"'{cls.name}' needs every client at lora.rank ({config.lora.rank}); "
            f"mixed ranks work with {mixed}"
        )
    if config.dp.client_level:
        _needs_linear(
            cls,
            f"'dp.mode' = {config.dp.mode!r}",
            "client-level DP adds noise to a sum of "
            "clipped client updates, and this strategy combines updates non-linearly",
        )
    _check_robust(config, cls)
    if cls.merges_into_base and config.model.quantization != "none":
        kept = ", ".join(
            n for n, c in STRATEGIES.items() if c.reply_kind == "tensors" and not c.merges_into_base
        )
        raise ConfigError(
            f"run config 'model.quantization' = {config.model.quantization!r}: strategy "
            f"'{cls.name}' merges a dense delta into the base weights, which k-bit weights "
            f"cannot take; use {kept}, or model.quantization = none"
        )
    if config.secagg.enabled:
        _needs_linear(
            cls,
            "'secagg.enabled' = True",
            "secure aggregation gives the server only "
            "the sum of the clients' updates, and this strategy needs each update on "
            "its own",
        )
    return options


def build_strategy(config: RunConfig, initial: GlobalModel) -> Strategy:
    """The configured strategy, starting from ``initial``, in the wrapper its DP mode or robust
    method asks for.

    Raises
    ------
    ConfigError
        What ``check_strategy`` refuses, and a SecAgg+ quantization too coarse for client-level
        DP's clip bound.
    """
    options = check_strategy(config)
    cls, s = STRATEGIES[config.strategy.name], config.strategy
    strategy = cls.from_config(
        config,
        initial,
        options,
        sampler=PartitionSampler(config.seed),
        wire_dtype=config.wire.dtype,
        fraction_train=s.fraction_train,
        fraction_evaluate=s.fraction_evaluate,
        min_train_nodes=s.min_train_nodes,
        min_evaluate_nodes=s.min_train_nodes if s.fraction_evaluate > 0 else 0,
        min_available_nodes=s.min_available_nodes,
    )
    if config.robust.method != "none":
        return RobustAggregation(strategy, config.robust)
    if config.dp.distributed_noise:
        dimension = update_dimension(strategy, config)
        return DistributedDpStrategy(strategy, DistributedClientDp(config, dimension))
    if config.dp.client_level:
        # Poisson sampling at fraction-train: the rate the accountant composes.
        mechanism = ClientLevelDp(
            config.dp,
            s.fraction_train,
            config.num_server_rounds,
            expected_clients=s.fraction_train * s.min_available_nodes,
            floor=2 * _rounding_margin(config, strategy),
        )
        return ClientLevelDpStrategy(strategy, mechanism)
    return strategy
