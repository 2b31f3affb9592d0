"""The simulated clock against its definition: transfer times from bandwidth and latency,
compute from FLOPs and throughput, deadlines, over-selection, partial work, and availability
and failures at their profiles' rates."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from federated.config import parse_run_config
from federated.devices.profiles import load_profiles
from simulation.clock import DeviceRound, device_round, fails_at, online, settle_round
from simulation.compute_cost import step_flops

PI5 = load_profiles()["pi5"]


def test_half_the_bandwidth_takes_exactly_the_expected_extra_time() -> None:
    full = device_round(PI5, bytes_down=10_000_000, bytes_up=2_000_000, step_flops=3e10, steps=4)
    half = replace(PI5, uplink_bps=PI5.uplink_bps / 2, downlink_bps=PI5.downlink_bps / 2)
    slow = device_round(half, bytes_down=10_000_000, bytes_up=2_000_000, step_flops=3e10, steps=4)
    assert slow.download - full.download == pytest.approx(8 * 10_000_000 / PI5.downlink_bps)
    assert slow.upload - full.upload == pytest.approx(8 * 2_000_000 / PI5.uplink_bps)
    assert slow.compute == full.compute == pytest.approx(4 * 3e10 / PI5.flops)
    assert full.download == pytest.approx(PI5.latency_s + 8e7 / PI5.downlink_bps)


def _rounds(finishes: dict[int, float], steps: int = 10) -> dict[int, DeviceRound]:
    # one second down, one second up, the rest computing
    return {p: DeviceRound(1.0, t - 2.0, 1.0, steps) for p, t in finishes.items()}


def test_a_deadline_drops_exactly_the_late_devices() -> None:
    rounds = _rounds({0: 5.0, 1: 12.0, 2: 9.99, 3: 10.0, 4: 30.0})
    outcome = settle_round(rounds, deadline=10.0)
    assert outcome.kept == {2: 10, 3: 10, 0: 10} and outcome.late == [1, 4]
    assert outcome.duration == 10.0
    assert settle_round(rounds).duration == 30.0 and len(settle_round(rounds).kept) == 5


def test_over_selection_keeps_the_first_k_to_finish() -> None:
    outcome = settle_round(_rounds({0: 7.0, 1: 3.0, 2: 9.0, 3: 4.0, 4: 8.0}), keep=3)
    assert list(outcome.kept) == [1, 3, 0] and outcome.extra == [4, 2]
    assert outcome.duration == 7.0


def test_partial_work_counts_the_steps_finished_by_the_deadline() -> None:
    # 10 steps of 1 s after a 1 s download; the upload takes 1 s: a 10 s deadline leaves 8 s.
    outcome = settle_round(_rounds({0: 12.0, 1: 5.0, 2: 100.0}), deadline=10.0, partial=True)
    assert outcome.kept[1] == 10 and outcome.kept[0] == 8
    assert 2 not in outcome.kept  # 9.8 s a step: none done in the 8 s left, dropped
    assert outcome.duration == 10.0


def test_availability_and_failures_happen_at_their_rates() -> None:
    profile = replace(PI5, availability=0.3, failure_rate=0.2, daily_pattern=None)
    trials = 20_000
    up = sum(online(profile, 0, r, p, hour=0) for r in range(200) for p in range(100))
    failed = [fails_at(profile, 0, r, p, work=50.0) for r in range(200) for p in range(100)]
    # Binomial counts within 4 standard deviations of their means.
    for count, rate in ((up, 0.3), (sum(f is not None for f in failed), 0.2)):
        assert abs(count - rate * trials) < 4 * math.sqrt(trials * rate * (1 - rate))
    times = [f for f in failed if f is not None]
    assert min(times) >= 0 and max(times) <= 50.0
    assert sum(times) / len(times) == pytest.approx(25.0, rel=0.05)  # uniform over the work


def test_a_daily_pattern_scales_availability_by_the_hour() -> None:
    night = replace(PI5, availability=0.4, daily_pattern=(2.0,) * 12 + (0.5,) * 12)
    day = sum(online(night, 1, r, 0, hour=15) for r in range(10_000)) / 10_000
    late = sum(online(night, 1, r, 0, hour=3) for r in range(10_000)) / 10_000
    assert day == pytest.approx(0.2, abs=0.02) and late == pytest.approx(0.8, abs=0.02)


def test_a_step_costs_its_model_s_flops() -> None:
    config = parse_run_config({"model.name": "smollm2-135m"})
    forward = 2 * 134.5e6 * 4 * 96  # two FLOPs a weight a token, embeddings looked up as a head
    lora = step_flops(config, 4, 96, config.lora.rank)
    assert lora == pytest.approx(2 * forward, rel=0.1)  # the backward computes input gradients
    zo = step_flops(
        parse_run_config({"model.name": "smollm2-135m", "mode": "zo", "strategy.name": "fedkseed"}),
        4,
        96,
        8,
    )
    assert zo == pytest.approx(2 * forward, rel=0.1)  # two forwards
    assert step_flops(config, 8, 96, config.lora.rank) == pytest.approx(2 * lora, rel=0.05)
