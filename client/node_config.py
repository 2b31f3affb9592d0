"""What a SuperNode says about itself through ``--node-config``: its partition, its data, its
device and how it trains.

``partition-id`` and ``num-partitions`` name the node's place in the federation (its seeds, its
state files, the server's sampling); a ``data-file`` replaces the built-in partition's records
with the node's own. ``max-epsilon-per-run`` and ``max-epsilon-total`` cap what record-level DP
may spend on the node's data in one run and over its lifetime, at ``ledger-delta``
(``federated.privacy.lifetime_ledger``). ``device-profile`` (a preset of
``federated/devices/presets.toml``) and ``memory-gb`` size the job to the device as the
simulator does; ``mode = zo`` puts the node on zeroth-order steps on the LoRA factors of a LoRA
run. Every fault is one line naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from flwr.app import Context

from client.node_files import NODE_CONFIG_KEY as STATE_DIR_KEY
from federated.config import RunConfig
from federated.devices.planner import as_mode, plan_device
from federated.devices.profiles import DeviceProfile, ProfileError, load_profiles
from federated.privacy.lifetime_ledger import (
    DEFAULT_DELTA,
    DELTA_KEY,
    PER_RUN_KEY,
    TOTAL_KEY,
    DeviceCeilings,
)
from federated.zo.factor_steps import factor_steps_problem

KNOWN_KEYS = (
    "partition-id",
    "num-partitions",
    "data-file",
    "mode",
    "device-profile",
    "memory-gb",
    STATE_DIR_KEY,
    PER_RUN_KEY,
    TOTAL_KEY,
    DELTA_KEY,
)
_MODES = ("lora", "zo")


class NodeConfigError(ValueError):
    """A node config that this node cannot run with; the message names the key."""


@dataclass(frozen=True)
class NodeSettings:
    partition_id: int
    num_partitions: int
    data_file: Path | None = None
    mode: str | None = None  # None: the run's mode
    profile: DeviceProfile | None = None
    ceilings: DeviceCeilings = DeviceCeilings()


@dataclass(frozen=True)
class NodeJob:
    """How this node trains in a run: its mode and, where its memory asks for one, a smaller
    batch than the run's."""

    mode: str
    batch: int | None

    def zo_on_factors(self, config: RunConfig) -> bool:
        return config.mode == "lora" and self.mode == "zo"


def _integer(node: dict, key: str) -> int:
    value = node[key]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise NodeConfigError(f"node config '{key}' = {value!r}: expected an integer")
    try:
        return int(value)
    except ValueError:
        raise NodeConfigError(f"node config '{key}' = {value!r}: expected an integer") from None


def _number(node: dict, key: str, below: float | None = None) -> float | None:
    """The node config's ``key`` as a number above 0 (and below ``below``); None when absent."""
    value = node.get(key)
    if value is None:
        return None
    allowed = "above 0" + (f" and below {below:g}" if below is not None else "")
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not (number > 0 and (below is None or number < below)):
        raise NodeConfigError(f"node config '{key}' = {value!r}: expected a number {allowed}")
    return number


def _ceilings(node: dict) -> DeviceCeilings:
    delta = _number(node, DELTA_KEY, below=1.0)
    return DeviceCeilings(
        _number(node, PER_RUN_KEY),
        _number(node, TOTAL_KEY),
        DEFAULT_DELTA if delta is None else delta,
    )


def _profile(node: dict) -> DeviceProfile | None:
    name, memory = node.get("device-profile"), node.get("memory-gb")
    if name is None and memory is None:
        return None
    profile = None
    if name is not None:
        try:
            presets = load_profiles()
        except ProfileError as err:
            raise NodeConfigError(f"node config 'device-profile': {err}") from None
        if str(name) not in presets:
            raise NodeConfigError(
                f"node config 'device-profile' = {name!r}: not a preset; use one of "
                + ", ".join(sorted(presets))
            )
        profile = presets[str(name)]
    if memory is None:
        return profile
    if isinstance(memory, bool) or not isinstance(memory, int | float) or not memory > 0:
        raise NodeConfigError(f"node config 'memory-gb' = {memory!r}: expected a number above 0")
    base = profile or DeviceProfile("this node", "", 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    return replace(base, memory_bytes=float(memory) * 1e9)


def node_settings(context: Context) -> NodeSettings:
    """This node's settings from its ``--node-config``; a fault raises `NodeConfigError`."""
    node = dict(context.node_config)
    unknown = sorted(set(node) - set(KNOWN_KEYS))
    if unknown:
        raise NodeConfigError(
            f"node config has unknown keys {unknown}; known: {', '.join(KNOWN_KEYS)}"
        )
    if "partition-id" not in node or "num-partitions" not in node:
        raise NodeConfigError(
            "this SuperNode has no partition: start it with "
            "--node-config 'partition-id=<i> num-partitions=<n>'"
        )
    partition_id, num_partitions = _integer(node, "partition-id"), _integer(node, "num-partitions")
    if not 0 <= partition_id < num_partitions:
        raise NodeConfigError(
            f"node config 'partition-id' = {partition_id}: outside 0..{num_partitions - 1}"
        )
    mode = node.get("mode")
    if mode is not None and mode not in _MODES:
        raise NodeConfigError(f"node config 'mode' = {mode!r}: use lora or zo")
    data_file = node.get("data-file")
    if data_file is not None and (not isinstance(data_file, str) or not data_file.strip()):
        raise NodeConfigError(f"node config 'data-file' = {data_file!r}: expected a file path")
    return NodeSettings(
        partition_id,
        num_partitions,
        Path(data_file).expanduser() if data_file else None,
        mode,
        _profile(node),
        _ceilings(node),
    )


@lru_cache(maxsize=4)  # the memory estimate builds the model's skeleton
def node_job(config: RunConfig, node: NodeSettings) -> NodeJob:
    """How ``node`` trains in the run of ``config``: the run's job, or the node's mode, or what
    its device's memory allows (``federated.devices.planner``: a smaller batch, else
    zeroth-order steps on the LoRA factors), at the run's LoRA rank, which the server checks
    every reply against. A job the run cannot take raises `NodeConfigError`."""
    if node.mode == "lora" and config.mode == "zo":
        raise NodeConfigError(
            "node config 'mode' = 'lora': this is a zeroth-order run; a node can take "
            "zeroth-order steps in a LoRA run, not LoRA steps in a zeroth-order one"
        )
    mode, batch = node.mode or config.mode, None
    if node.profile is not None:
        planned_config = as_mode(config, "zo") if mode == "zo" else config
        plan = plan_device(
            planned_config,
            node.profile,
            smaller_ranks=False,
            zo_fallback=config.mode == "lora" and node.mode is None,
        )
        if plan.mode is None:
            raise NodeConfigError(
                f"node config 'device-profile' ({node.profile.name}): {plan.reason}"
            )
        mode, batch = plan.mode, plan.batch
    job = NodeJob(mode, batch)
    problem = factor_steps_problem(config) if job.zo_on_factors(config) else None
    if problem:
        raise NodeConfigError(f"this node takes zeroth-order steps: {problem}")
    return job
