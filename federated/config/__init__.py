"""The run configuration: one schema, parsed once from Flower's ``context.run_config``.

Keys follow Flower's LLM examples: kebab-case, dotted by section (``lora.rank``). Every key has a
default here; ``pyproject.toml``'s ``[tool.flwr.app.config]`` repeats them because Flower only
accepts ``--run-config`` overrides of keys it already knows (a test keeps the two equal).

The schema is one module per section; this package's names are the ones the rest of fedtune uses.
"""

from federated.config.data import BUILTIN_DATASETS, DataSettings
from federated.config.lora import LoraSettings
from federated.config.model import ModelSettings
from federated.config.options import ConfigError, option
from federated.config.privacy import PrivacySettings
from federated.config.reference import app_config_toml, config_reference_markdown, toml_lines
from federated.config.robust import RobustSettings
from federated.config.run_config import RunConfig
from federated.config.schema import (
    build_section,
    default_flat_config,
    iter_options,
    parse_run_config,
    run_config_to_flat,
    unknown_key,
)
from federated.config.secagg import SecAggSettings
from federated.config.server import ServerSettings
from federated.config.simulation import SimulationSettings
from federated.config.split import SplitSettings
from federated.config.strategy import StrategySettings
from federated.config.tracking import TrackingSettings
from federated.config.train import EvalSettings, TrainSettings
from federated.config.wire import WireSettings
from federated.config.zo import ZoSettings

__all__ = [
    "BUILTIN_DATASETS",
    "ConfigError",
    "DataSettings",
    "EvalSettings",
    "LoraSettings",
    "ModelSettings",
    "PrivacySettings",
    "RobustSettings",
    "RunConfig",
    "SecAggSettings",
    "ServerSettings",
    "SimulationSettings",
    "SplitSettings",
    "StrategySettings",
    "TrackingSettings",
    "TrainSettings",
    "WireSettings",
    "ZoSettings",
    "app_config_toml",
    "build_section",
    "config_reference_markdown",
    "default_flat_config",
    "iter_options",
    "option",
    "parse_run_config",
    "run_config_to_flat",
    "toml_lines",
    "unknown_key",
]
