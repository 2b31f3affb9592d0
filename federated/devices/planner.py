"""What each device can train: the configured job if it fits in the profile's memory, else a
smaller LoRA rank or batch, else zeroth-order (inference memory only), else split learning (the
first blocks only), else nothing, with the reason; in a split run, the deepest cut and largest
batch that fit. Estimates come from
``federated.devices.memory_estimate`` at the run's longest sequence."""

from __future__ import annotations

from dataclasses import dataclass, replace

from federated.config import RunConfig
from federated.devices.memory_estimate import MemoryEstimate, estimate_memory
from federated.devices.profiles import DeviceProfile
from federated.devices.split_estimate import estimate_split_memory
from federated.model.numerics import PLAIN_FP32


@dataclass(frozen=True)
class Plan:
    """One device's job: its mode, rank and batch, or None when nothing fits."""

    mode: str | None  # "lora", "zo", "split", or None: the device is left out
    rank: int
    batch: int
    estimate: MemoryEstimate | None
    reason: str
    cut: int = 0  # split: the blocks the device holds


def as_mode(config: RunConfig, mode: str) -> RunConfig:
    """``config`` as a job of ``mode``: in a LoRA run, zeroth-order steps train its factors."""
    if mode == config.mode:
        return config
    return replace(config, mode=mode, zo=replace(config.zo, params="lora"))


def _halvings(start: int) -> list[int]:
    values = [start]
    while values[-1] > 1:
        values.append(values[-1] // 2)
    return values


def examples_in_memory(config: RunConfig, batch: int) -> int:
    """The examples a step holds at once: a DP-SGD step with dp.record.physical-batch takes its
    batch in chunks, so its logical batch (and its privacy) need not shrink to fit."""
    physical = config.dp.record.physical_batch if config.dp.record_level else 0
    return min(batch, physical) if physical else batch


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def plan_device(
    config: RunConfig,
    profile: DeviceProfile,
    *,
    smaller_ranks: bool,
    zo_fallback: bool,
    split_fallback: bool = False,
) -> Plan:
    """The largest job that fits ``profile``: the configured rank and batch first; then, batch
    by batch from the configured one down, smaller ranks (``smaller_ranks``: the strategy serves
    mixed ranks); then zeroth-order on the same LoRA factors (``zo_fallback``: a mixed
    federation); then split learning of the same factors (``split_fallback``); else the device
    is left out."""
    length, budget = config.model.max_length, profile.memory_bytes
    if config.mode == "split":
        return _plan_split(config, budget)
    smallest: MemoryEstimate | None = None
    if config.mode == "lora":
        ranks = _halvings(config.lora.rank) if smaller_ranks else [config.lora.rank]
        for batch in _halvings(config.train.batch_size):
            for rank in ranks:
                estimate = estimate_memory(config, examples_in_memory(config, batch), length, rank)
                smallest = estimate
                if estimate.total <= budget:
                    changed = (rank, batch) != (config.lora.rank, config.train.batch_size)
                    why = f"fits at rank {rank}, batch {batch}" + (" (reduced)" if changed else "")
                    return Plan("lora", rank, batch, estimate, f"{why}: {_gb(estimate.total)}")
    if config.mode == "zo" or zo_fallback:
        zo = as_mode(config, "zo")
        for batch in _halvings(config.train.batch_size):
            estimate = estimate_memory(zo, batch, length, config.lora.rank)
            smallest = estimate if smallest is None or estimate.total < smallest.total else smallest
            if estimate.total <= budget:
                why = f"zeroth-order at batch {batch}: {_gb(estimate.total)}"
                return Plan("zo", config.lora.rank, batch, estimate, why)
    if split_fallback and config.mode == "lora":
        split = _plan_split(config, budget)
        if split.mode is not None:
            return split
    need = _gb(smallest.total) if smallest else "more"
    return Plan(
        None,
        config.lora.rank,
        0,
        None,
        f"left out: the smallest job needs {need}, {profile.name} has {_gb(budget)}",
    )


def _plan_split(config: RunConfig, budget: float) -> Plan:
    """A split device's job: at the largest batch that fits, the deepest cut up to
    ``split.cut-layer`` (a deeper cut keeps more of the input from the server)."""
    smallest: MemoryEstimate | None = None
    for batch in _halvings(config.train.batch_size):
        for cut in range(config.split.cut_layer, 0, -1):
            job = replace(config, split=replace(config.split, cut_layer=cut))
            estimate = estimate_split_memory(job, batch, config.model.max_length, PLAIN_FP32)
            smallest = estimate
            if estimate.total <= budget:
                why = f"split at {cut} block(s), batch {batch}: {_gb(estimate.total)}"
                return Plan("split", config.lora.rank, batch, estimate, why, cut=cut)
    need = _gb(smallest.total) if smallest else "more"
    return Plan(None, config.lora.rank, 0, None, f"left out: split needs {need}, has {_gb(budget)}")
