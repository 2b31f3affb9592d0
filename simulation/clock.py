"""The simulated clock: how long each device takes in a round, and who makes it in time.

No one sleeps. A device's round is computed, as FedScale and FederatedScope do it: the download
(latency plus the bytes it receives over its downlink), its compute (the FLOPs of its local steps
over its profile's sustained throughput), and the upload (latency plus its bytes over its
uplink). Replies count in the order they would finish; a deadline drops the late ones, or keeps
the steps they finished by then; over-selection keeps the first K. Who is online and who fails
mid-round is drawn from the profiles with generators seeded by (seed, round, partition), so
the simulated clock repeats with the seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from federated.devices.profiles import DeviceProfile

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class DeviceRound:
    """One device's simulated round, in seconds from the round's start."""

    download: float
    compute: float  # all its local steps
    upload: float
    steps: int

    @property
    def finish(self) -> float:
        return self.download + self.compute + self.upload

    def steps_by(self, deadline: float) -> int:
        """Local steps finished when the deadline leaves time to upload them."""
        if self.finish <= deadline:
            return self.steps
        computing = deadline - self.download - self.upload
        if computing <= 0 or self.compute <= 0:
            return 0
        return min(self.steps, math.floor(computing / (self.compute / self.steps)))


def device_round(
    profile: DeviceProfile,
    bytes_down: int,
    bytes_up: int,
    step_flops: float,
    steps: int,
    *,
    fixed_flops: float = 0.0,
    round_trips: int = 1,
) -> DeviceRound:
    """The round of one device that receives ``bytes_down``, takes ``steps`` steps of
    ``step_flops`` each (and ``fixed_flops`` besides) and sends ``bytes_up``, in
    ``round_trips`` exchanges with the server (a split device's: two a step), each paying
    the latency both ways."""
    return DeviceRound(
        download=round_trips * profile.latency_s + 8 * bytes_down / profile.downlink_bps,
        compute=(fixed_flops + steps * step_flops) / profile.flops,
        upload=round_trips * profile.latency_s + 8 * bytes_up / profile.uplink_bps,
        steps=steps,
    )


@dataclass(frozen=True)
class RoundOutcome:
    """Who counts in a round, and how long the round took on the simulated clock."""

    kept: dict[int, int]  # partition -> local steps that count
    late: list[int]  # finished after the deadline (dropped, or kept in part in ``kept``)
    extra: list[int]  # finished in time, after the K that over-selection keeps
    duration: float


def settle_round(
    rounds: Mapping[int, DeviceRound],
    *,
    deadline: float = 0.0,
    keep: int = 0,
    partial: bool = False,
) -> RoundOutcome:
    """Order the devices' rounds by finish time and decide who counts.

    ``deadline`` (seconds, 0: none) drops the devices that finish later, or with ``partial``
    counts the steps they finished in time (a device with none is dropped); ``keep`` (0: all)
    keeps the first K replies (over-selection). The round ends with the K-th reply, else at the
    deadline if anyone was still working, else with the last reply.
    """
    order = sorted(rounds, key=lambda p: (rounds[p].finish, p))
    in_time = [p for p in order if not deadline or rounds[p].finish <= deadline]
    late = [p for p in order if p not in in_time]
    kept = {p: rounds[p].steps for p in (in_time[:keep] if keep else in_time)}
    extra = in_time[len(kept) :]
    if partial:
        for p in late:
            done = rounds[p].steps_by(deadline)
            if done and (not keep or len(kept) < keep):
                kept[p] = done
    if keep and len(in_time) >= keep:
        duration = rounds[in_time[keep - 1]].finish
    elif late:
        duration = deadline
    else:
        duration = max((rounds[p].finish for p in in_time), default=0.0)
    return RoundOutcome(kept, late, extra, duration)


def online(
    profile: DeviceProfile, seed: int, server_round: int, partition: int, hour: float
) -> bool:
    """Whether the device is online for this round (its availability at the simulated hour)."""
    draw = random.Random(f"{seed}/online/{server_round}/{partition}").random()
    return draw < profile.availability_at(int(hour) % 24)


def fails_at(
    profile: DeviceProfile, seed: int, server_round: int, partition: int, work: float
) -> float | None:
    """When the device fails within its ``work`` seconds of the round, or None if it does not."""
    rng = random.Random(f"{seed}/failure/{server_round}/{partition}")
    if rng.random() >= profile.failure_rate:
        return None
    return rng.random() * work
