"""Strategies by the name the run config uses (``strategy.name``), built from a run config and
wrapped in what the config adds to any strategy that fits: client-level or distributed DP, or
robust aggregation."""

from __future__ import annotations

from federated.config import ConfigError, RunConfig
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
from strategies.global_model import GlobalModel
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


def build_strategy(config: RunConfig, initial: GlobalModel) -> Strategy:
    """The configured strategy, starting from ``initial``, in the wrapper its DP mode or robust
    method asks for.

    Raises
    ------
    ConfigError
        When the strategy cannot serve the configured clients (mixed ranks it cannot combine).
    """
    cls = STRATEGIES[config.strategy.name]
    ranks = set(config.lora.ranks())
    if ranks != {config.lora.rank} and not cls.mixed_ranks:
        mixed = ", ".join(name for name, c in STRATEGIES.items() if c.mixed_ranks)
        raise ConfigError(
            f"run config 'lora.client-ranks' = {config.lora.client_ranks!r}: strategy "
            f"'{cls.name}' needs every client at lora.rank ({config.lora.rank}); "
            f"mixed ranks work with {mixed}"
        )
    s = config.strategy
    if config.dp.client_level:
        _needs_linear(
            cls,
            f"'dp.mode' = {config.dp.mode!r}",
            "client-level DP adds noise to a sum of "
            "clipped client updates, and this strategy combines updates non-linearly",
        )
    _check_robust(config, cls)
    if config.secagg.enabled:
        _needs_linear(
            cls,
            "'secagg.enabled' = True",
            "secure aggregation gives the server only "
            "the sum of the clients' updates, and this strategy needs each update on "
            "its own",
        )
    strategy = cls.from_config(
        config,
        initial,
        sampler=PartitionSampler(config.seed),
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
