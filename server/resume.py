"""Going on from a run's last checkpoint (``resume=RUN_DIR``).

A resumed run must give what the uninterrupted one would have: its config must be the run's in
every key that changes the result. Only where the run is written (``run-name``, ``output-dir``,
``resume`` itself), where its numbers are also logged (``tracking.*``) and how long the server
waits (its timeouts and retries) may differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from federated.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from federated.config import ConfigError, RunConfig, run_config_to_flat
from strategies.strategy_wrapper import Strategy

FREE_KEYS = frozenset(
    {
        "resume",
        "run-name",
        "output-dir",
        "server.round-timeout",
        "server.node-wait-timeout",
        "server.round-retries",
        # Where the run's numbers are also logged: a resumed run catches its tracker up.
        "tracking.backend",
        "tracking.uri",
        "tracking.experiment",
    }
)


def config_differences(saved: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, tuple]:
    """The keys, outside ``FREE_KEYS``, whose values differ: key -> (the run's, this one's)."""
    names = (set(saved) | set(now)) - FREE_KEYS
    return {k: (saved.get(k), now.get(k)) for k in sorted(names) if saved.get(k) != now.get(k)}


def resume_run(config: RunConfig, strategy: Strategy) -> tuple[Path, Checkpoint]:
    """The run folder and checkpoint ``config.resume`` names, the strategy restored from it; a
    ``ConfigError`` in one line when the run cannot go on with this config."""
    folder = Path(config.resume).expanduser().resolve()
    where = f"run config 'resume' = {config.resume!r}"
    try:
        checkpoint = load_checkpoint(folder)
    except CheckpointError as err:
        raise ConfigError(f"{where}: {err}") from None
    saved, now = checkpoint.state.get("config", {}), run_config_to_flat(config)
    if config.mode == "zo" and config.zo.lr == 0:
        now["zo.lr"] = saved.get("zo.lr")  # auto: the rate the run probed
    differ = config_differences(saved, now)
    if differ:
        shown = "; ".join(f"{k}: run {a!r}, now {b!r}" for k, (a, b) in list(differ.items())[:6])
        raise ConfigError(
            f"{where}: this config differs from the run's in {len(differ)} key(s) that change "
            f"the result ({shown}); resume with the run's values"
        )
    if checkpoint.round >= config.num_server_rounds:
        raise ConfigError(f"{where}: the run finished all its {checkpoint.round} rounds")
    try:
        strategy.restore(checkpoint.tensors, checkpoint.state["strategy"])
    except (KeyError, ValueError) as err:
        raise ConfigError(f"{where}: the checkpoint does not fit this run ({err})") from None
    return folder, checkpoint


def check_partition_count(config: RunConfig, checkpoint: Checkpoint, num_partitions: int) -> None:
    """The nodes of a resumed run hold the run's partitions: split across another number, the
    data gives every client other examples, so the run would end elsewhere."""
    saved = checkpoint.state.get("num-partitions")
    if saved is not None and saved != num_partitions:
        raise ConfigError(
            f"run config 'resume' = {config.resume!r}: the run split its data across {saved} "
            f"partitions, and the nodes now say {num_partitions} (num-partitions in their node "
            f"config; in simulation, num-supernodes): resume with {saved}"
        )
