"""The device simulator's section: which devices the clients run on, and the round's clock.

Off by default: without a population a run behaves as it does without the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class SimulationSettings:
    population: str = option(
        "",
        "The clients' devices: a mix of profiles (phone-low:0.5,pi5:0.3,laptop:0.2) or a CSV "
        "of partition-id,profile rows; empty: no device simulation.",
    )
    profiles_file: str = option(
        "", "A TOML file of device profiles that add to or replace the presets."
    )
    deadline: float = option(
        0.0, "Simulated seconds a round waits for replies (0: until the last one).", minimum=0.0
    )
    over_selection: float = option(
        1.0,
        "Sample this many times the clients a round needs and keep the first to finish.",
        minimum=1.0,
    )
    stragglers: str = option(
        "drop",
        "What becomes of a client that misses the deadline: drop, or partial (its steps "
        "finished by the deadline count).",
        choices=("drop", "partial"),
    )
    zo_fallback: bool = option(
        True,
        "In a LoRA run, a device with memory for inference only takes zeroth-order steps on "
        "the same LoRA factors (zo.lr, zo.eps, zo.pool-size, zo.perturbation) instead of being "
        "left out: a mixed federation (strategies fedavg, fedex-lora, flexlora, lora-fair, "
        "hetlora).",
    )
    split_fallback: bool = option(
        False,
        "In a LoRA run, a device that fits neither LoRA nor zeroth-order steps trains the LoRA "
        "factors of its first blocks (up to split.cut-layer) by split learning, the server "
        "those of the rest on its behalf; the server sees its cut-layer activations "
        "(docs/split.md). Off: such a device is left out.",
    )
    start_hour: float = option(
        0.0,
        "The simulated local hour when round 1 starts (for daily availability).",
        minimum=0.0,
        maximum=24.0,
    )
    target_loss: float = option(
        0.0,
        "Report the simulated hours until the test loss first reaches this (0: none).",
        minimum=0.0,
    )
    target_accuracy: float = option(
        0.0,
        "Report the simulated hours until the test accuracy first reaches this (0: none).",
        minimum=0.0,
        maximum=1.0,
    )
