"""The simulated devices of a run: who can train, who is online, who counts, and when.

Each partition runs on one device for the whole run (``simulation.population``), with the job
the memory planner picked for that device. Before a round's messages leave, the simulator works
out on the simulated clock what each sampled device would do: fail partway (its message is not
sent), finish after the deadline (dropped, or sent fewer steps: those it finishes in time), or
finish in time; over-selection keeps the first to finish. Only the messages whose work counts
are sent, so the real compute is that of the clients that count, and a simulated day takes the
seconds that compute takes. Time is computed, never slept.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from logging import INFO

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common import log

from federated.config import RunConfig
from federated.devices.planner import Plan, as_mode, plan_device
from federated.devices.profiles import DeviceProfile, load_profiles
from federated.devices.split_estimate import split_skeleton
from federated.model.workspace import client_indices
from federated.protocol import message_keys as keys
from federated.protocol.wire import serialized_bytes
from simulation.clock import (
    SECONDS_PER_HOUR,
    DeviceRound,
    device_round,
    fails_at,
    online,
    settle_round,
)
from simulation.compute_cost import split_flops, step_flops
from simulation.population import population

# Bytes of a reply beyond its tensors (records, metrics, Flower's object headers).
_REPLY_OVERHEAD_BYTES = 2048
# A zeroth-order reply's bytes per step: an int64 seed index and a float32 scalar.
_ZO_PAIR_BYTES = 12


def _mb(n: float) -> float:
    return round(n / 1e6, 1)


@dataclass
class RoundClock:
    """One round on the simulated clock, for ``metrics.jsonl``."""

    start_hour: float
    duration_s: float = 0.0
    devices: list[dict] = field(default_factory=list)
    left_out: int = 0  # devices the planner found no job for
    memory_mb: dict[str, float] = field(default_factory=dict)  # planned peak, by profile

    def record(self) -> dict:
        counts = Counter(f"devices_{d['status'].replace(' ', '_')}" for d in self.devices)
        return {
            "start_hour": self.start_hour,
            "duration_s": self.duration_s,
            "devices": self.devices,
            **counts,
            "devices_left_out": self.left_out,
            "memory_mb_by_profile": self.memory_mb,
        }


class DeviceSimulator:
    """The devices of ``num_partitions`` clients, their plans and the simulated clock."""

    def __init__(
        self,
        config: RunConfig,
        num_partitions: int,
        mixed_ranks: bool,
        zo_fallback: bool,
        split_fallback: bool = False,
    ) -> None:
        """``mixed_ranks``: the strategy serves smaller ranks; ``zo_fallback``: it takes
        zeroth-order devices on its factors (``server.zo_factor_replies``); ``split_fallback``:
        split devices on its factors (``server.split_round``)."""
        sim = config.simulation
        self.config = config
        self.devices: list[DeviceProfile] = population(
            sim.population, load_profiles(sim.profiles_file or None), num_partitions, config.seed
        )
        self.plans: dict[str, Plan] = {
            profile.name: plan_device(
                config,
                profile,
                smaller_ranks=mixed_ranks,
                zo_fallback=zo_fallback,
                split_fallback=split_fallback,
            )
            for profile in {p.name: p for p in self.devices}.values()
        }
        self.sizes = [
            len(client_indices(config, p, num_partitions)[0]) for p in range(num_partitions)
        ]
        self.elapsed_s = 0.0
        for name, plan in sorted(self.plans.items()):
            log(INFO, "device %s: %s", name, plan.reason)

    @property
    def hour(self) -> float:
        return self.config.simulation.start_hour + self.elapsed_s / SECONDS_PER_HOUR

    def plan_of(self, partition: int) -> Plan:
        return self.plans[self.devices[partition].name]

    def eligible(self, partition: int, server_round: int) -> bool:
        """Whether the partition's device can train (its plan) and is online this round."""
        if not 0 <= partition < len(self.devices) or self.plan_of(partition).mode is None:
            return False
        device = self.devices[partition]
        return online(device, self.config.seed, server_round, partition, self.hour)

    def steps_of(self, partition: int) -> int:
        """The local steps of the partition's full round, at its planned batch (a split
        device's: over the examples its pruning keeps)."""
        train = replace(self.config.train, batch_size=self.plan_of(partition).batch)
        size = self.sizes[partition]
        if self.plan_of(partition).mode == "split":
            size = max(1, math.ceil(self.config.split.keep_fraction * size))
        return train.steps_for(size)

    def zo_steps(self) -> dict[int, int]:
        """In a LoRA run, the partitions whose devices take zeroth-order steps on the factors,
        with the steps of their full round."""
        if self.config.mode != "lora":
            return {}
        return {
            p: self.steps_of(p) for p in range(len(self.devices)) if self.plan_of(p).mode == "zo"
        }

    def profiles(self) -> dict[str, dict]:
        """Per profile in the population: its devices and the planner's job for them, with
        the job's estimated peak memory (for ``summary.json``)."""
        counts = Counter(d.name for d in self.devices)
        return {
            name: {
                "devices": counts[name],
                "mode": plan.mode,
                "lora_rank": plan.rank,
                "batch": plan.batch,
                **({"cut_layer": plan.cut} if plan.mode == "split" else {}),
                "plan": plan.reason,
                "memory_mb": _mb(plan.estimate.total) if plan.estimate else None,
            }
            for name, plan in sorted(self.plans.items())
        }

    def left_out(self) -> dict[int, str]:
        """Partitions whose device can train nothing, and why."""
        return {
            p: self.plan_of(p).reason
            for p in range(len(self.devices))
            if self.plan_of(p).mode is None
        }

    def _device_round(self, partition: int, bytes_down: int, upload_bytes: int) -> DeviceRound:
        plan, config = self.plan_of(partition), self.config
        steps = self.steps_of(partition)
        if plan.mode == "split":
            return self._split_round(partition, plan, steps, bytes_down, upload_bytes)
        flops = step_flops(
            as_mode(config, plan.mode), plan.batch, config.model.max_length, plan.rank
        )
        if plan.mode == "zo":
            upload_bytes = _ZO_PAIR_BYTES * steps
        return device_round(
            self.devices[partition], bytes_down, upload_bytes + _REPLY_OVERHEAD_BYTES, flops, steps
        )

    def _split_round(
        self, partition: int, plan: Plan, steps: int, bytes_down: int, upload_bytes: int
    ) -> DeviceRound:
        """A split device's round: its local-loss steps and pruning pass, then ``steps``
        exchange steps, each moving the batch's activations up and down twice (activations
        and a gradient each way) in two round trips; the server's body is the server's time."""
        s, length = self.config.split, self.config.model.max_length
        config = replace(self.config, split=replace(s, cut_layer=plan.cut))
        flops = split_flops(config, plan.batch, length)
        passes = math.ceil(self.sizes[partition] / plan.batch)
        fixed = s.local_steps * flops.local_step + passes * flops.local_forward
        split = split_skeleton(config)
        activations = plan.batch * (split.virtual_tokens + length) * split.lm.config.hidden_size * 4
        exchanged = steps * (2 * activations + 2 * _REPLY_OVERHEAD_BYTES)
        # In a LoRA run the device sends its own blocks' factors; the server adds the body's.
        own = sum(t.numel() for t in split.device_trainable().values())
        body = sum(t.numel() for t in split.body_trainable().values())
        upload = upload_bytes * own // (own + body)
        return device_round(
            self.devices[partition],
            2 * bytes_down + exchanged,  # the start and the closing train message
            upload + _REPLY_OVERHEAD_BYTES + exchanged,
            flops.split_step,
            steps,
            fixed_flops=fixed,
            round_trips=2 * steps + 2,
        )

    def schedule(
        self,
        messages: Sequence[Message],
        partition_of: Mapping[int, int],
        server_round: int,
        upload_bytes: int,
    ) -> tuple[list[Message], RoundClock]:
        """The messages whose work counts this round, each with its device's plan, and the
        round on the simulated clock. ``upload_bytes``: the tensors a LoRA reply carries."""
        sim = self.config.simulation
        clock = RoundClock(self.hour, left_out=len(self.left_out()))
        by_partition = {partition_of[m.metadata.dst_node_id]: m for m in messages}
        rounds, failed = {}, {}
        for partition, message in sorted(by_partition.items()):
            work = self._device_round(partition, serialized_bytes(message), upload_bytes)
            failure = fails_at(
                self.devices[partition], self.config.seed, server_round, partition, work.finish
            )
            if failure is None:
                rounds[partition] = work
            else:
                failed[partition] = failure
        keep = math.ceil(len(by_partition) / sim.over_selection) if sim.over_selection > 1 else 0
        outcome = settle_round(
            rounds, deadline=sim.deadline, keep=keep, partial=sim.stragglers == "partial"
        )
        clock.duration_s = outcome.duration
        if failed and not outcome.kept:
            clock.duration_s = max(clock.duration_s, sim.deadline or max(failed.values()))
        send = []
        for partition, message in sorted(by_partition.items()):
            work = rounds.get(partition)
            status = (
                "failed"
                if partition in failed
                else "kept"
                if partition in outcome.kept
                else "late"
                if partition in outcome.late
                else "not needed"
            )
            steps = outcome.kept.get(partition, 0)
            clock.devices.append(
                {
                    "partition_id": partition,
                    "profile": self.devices[partition].name,
                    "mode": self.plan_of(partition).mode,
                    "status": status,
                    "steps": steps,
                    "finish_s": round(work.finish, 3) if work else round(failed[partition], 3),
                    **(
                        {
                            "download_s": round(work.download, 3),
                            "compute_s": round(work.compute, 3),
                            "upload_s": round(work.upload, 3),
                        }
                        if work
                        else {}
                    ),
                }
            )
            if partition in outcome.kept:
                send.append(self._planned(message, partition, steps, work))
                plan = self.plan_of(partition)
                if plan.estimate is not None:
                    clock.memory_mb[self.devices[partition].name] = _mb(plan.estimate.total)
        self.elapsed_s += clock.duration_s
        return send, clock

    def _planned(self, message: Message, partition: int, steps: int, work: DeviceRound) -> Message:
        """``message`` with the device's plan in its config, where it differs from the run's."""
        plan, config = self.plan_of(partition), self.config
        overrides = {}
        if steps < work.steps:
            overrides[keys.PLANNED_STEPS] = steps
        if plan.batch != config.train.batch_size:
            overrides[keys.PLANNED_BATCH] = plan.batch
        if plan.rank < config.lora.rank_of(partition):
            overrides[keys.PLANNED_RANK] = plan.rank
        if plan.mode != config.mode:
            overrides[keys.PLANNED_MODE] = plan.mode
        if plan.mode == "split" and plan.cut != config.split.cut_layer:
            overrides[keys.PLANNED_CUT] = plan.cut
        if not overrides:
            return message
        content = RecordDict(dict(message.content))
        content[keys.CONFIG] = ConfigRecord({**message.content[keys.CONFIG], **overrides})
        return Message(
            content=content,
            dst_node_id=message.metadata.dst_node_id,
            message_type=message.metadata.message_type,
        )


def clock_summary(rounds: Sequence[Mapping], config: RunConfig) -> dict:
    """Simulated hours of the run, and until the test loss or accuracy first reached its
    target (None when it never did)."""
    sim, elapsed, reached = config.simulation, 0.0, {}
    targets = {"loss": sim.target_loss, "accuracy": sim.target_accuracy}
    for record in rounds:
        elapsed += record.get("simulation", {}).get("duration_s", 0.0)
        for name, target in targets.items():
            value = record.get(f"test_{name}")
            hit = value is not None and (value <= target if name == "loss" else value >= target)
            if target and hit and name not in reached:
                reached[name] = elapsed / SECONDS_PER_HOUR
    summary = {"simulated_hours": elapsed / SECONDS_PER_HOUR}
    for name, target in targets.items():
        if target:
            summary[f"hours_to_test_{name}_{target:g}"] = reached.get(name)
    return summary
