"""The whole run configuration: the run's own keys and one field per section."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from federated.config.audit import AuditSettings
from federated.config.data import BUILTIN_DATASETS, DataSettings
from federated.config.lora import LoraSettings
from federated.config.model import ModelSettings
from federated.config.options import option
from federated.config.privacy import PrivacySettings
from federated.config.robust import RobustSettings
from federated.config.secagg import SecAggSettings
from federated.config.server import ServerSettings
from federated.config.simulation import SimulationSettings
from federated.config.split import SplitSettings
from federated.config.strategy import StrategySettings
from federated.config.tracking import TrackingSettings
from federated.config.train import EvalSettings, TrainSettings
from federated.config.wire import WireSettings
from federated.config.zo import ZoSettings
from federated.model.presets import PRESETS
from federated.tasks import (
    TASK_CAUSAL_LM,
    TASK_CLASSIFICATION,
    TASK_CLASSIFICATION_AS_GENERATION,
)


@dataclass(frozen=True)
class RunConfig:
    mode: str = option(
        "lora",
        "lora (first-order LoRA training), zo (zeroth-order, seed-based: FedKSeed) or split "
        "(split learning of a soft prompt, SFPrompt: for devices that cannot hold the model).",
        choices=("lora", "zo", "split"),
    )
    num_server_rounds: int = option(3, "Federated rounds.", minimum=1)
    seed: int = option(
        0, "Seed of the data split, the model init and every client's sampler.", minimum=0
    )
    run_name: str = option("", "Folder name under output-dir (empty: model-strategy-timestamp).")
    output_dir: str = option(
        "results", "Where runs are written, relative to where flwr run starts the app."
    )
    resume: str = option(
        "",
        "A run folder to go on from, after its last checkpointed round; the config must be the "
        "run's, but for resume, run-name, output-dir, tracking and the server's timeouts and "
        "retries.",
    )
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    zo: ZoSettings = field(default_factory=ZoSettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    strategy: StrategySettings = field(default_factory=StrategySettings)
    robust: RobustSettings = field(default_factory=RobustSettings)
    dp: PrivacySettings = field(default_factory=PrivacySettings)
    secagg: SecAggSettings = field(default_factory=SecAggSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    wire: WireSettings = field(default_factory=WireSettings)
    simulation: SimulationSettings = field(default_factory=SimulationSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)

    @property
    def task(self) -> str:
        """The task from the key, else from the preset, else from the built-in dataset, else LM;
        classification posed as generation is classification for data, losses and metrics."""
        if self.verbalized:
            return TASK_CLASSIFICATION
        if self.model.task != "auto":
            return self.model.task
        if self.model.name in PRESETS:
            return PRESETS[self.model.name].task
        return BUILTIN_DATASETS.get(self.data.name, TASK_CAUSAL_LM)

    def with_zo_lr(self, lr: float) -> RunConfig:
        """This config with the rate its zeroth-order steps take (zo.lr = 0 resolved)."""
        return dataclasses.replace(self, zo=dataclasses.replace(self.zo, lr=lr))

    @property
    def verbalized(self) -> bool:
        """A causal LM classifies by its label words' likelihood (`federated.model.verbalizer`)."""
        return self.model.task == TASK_CLASSIFICATION_AS_GENERATION
