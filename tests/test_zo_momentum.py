"""Heavy-ball momentum in seed space: each seed's total is the closed form of heavy ball, and
replaying the totals rebuilds the client's weights."""

from __future__ import annotations

import pytest
import torch

from federated.model.presets import load_base_model
from federated.tasks import TASK_CAUSAL_LM
from federated.zo.momentum import SeedMomentum
from federated.zo.replay import replay_
from federated.zo.seed_pool import SeedPool
from federated.zo.targets import restore_, snapshot, zo_targets
from federated.zo.trainer import train_zo

BETA, LR = 0.8, 1e-2


def _flat(targets) -> torch.Tensor:
    return torch.cat([t.tensor.detach().flatten() for t in targets])


@pytest.mark.parametrize("structure", ["dense", "low-rank"])
def test_each_seeds_total_is_heavy_ball_and_its_replay_is_the_clients_weights(
    structure: str,
) -> None:
    model = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    targets = zo_targets(model, "full")
    w0 = snapshot(targets)
    pool = SeedPool.from_run_seed(0, 16)
    steps = [(3, 0.5), (7, -1.0), (3, 2.0), (11, 0.25)]  # seed 3 twice
    heavy_ball = SeedMomentum(pool, BETA)
    for index, scalar in steps:
        heavy_ball.step_(targets, index, scalar, LR, structure)
    trained = _flat(targets).clone()

    # Heavy ball: v_t = β v_{t−1} + g_t e_{j_t}, w_T = w_0 − lr Σ_t v_t, so step t's scalar
    # counts (1 − β^(T−t)) / (1 − β) times in its seed's total.
    total = len(steps)
    expected: dict[int, float] = {}
    for t, (index, scalar) in enumerate(steps):
        expected[index] = expected.get(index, 0.0) + scalar * (1 - BETA ** (total - t)) / (1 - BETA)
    indices, scalars = heavy_ball.pairs()
    assert indices == sorted(expected)
    assert scalars == pytest.approx([expected[i] for i in indices], rel=1e-6)

    restore_(targets, w0)
    sums = torch.zeros(len(pool))
    sums[indices] = torch.tensor(scalars)
    replay_(targets, pool, sums, LR, structure)
    torch.testing.assert_close(_flat(targets), trained, rtol=1e-5, atol=1e-6)


def test_a_momentum_round_reports_no_more_pairs_than_steps_and_replays_to_its_weights() -> None:
    model = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    targets = zo_targets(model, "full")
    w0 = snapshot(targets)
    pool = SeedPool.from_run_seed(0, 8)
    generator = torch.Generator().manual_seed(1)
    encoded = [
        {
            "input_ids": torch.randint(10, 1000, (12,), generator=generator).tolist(),
            "attention_mask": [1] * 12,
            "labels": [-100] * 6 + [5] * 6,
        }
        for _ in range(4)
    ]
    result = train_zo(
        model,
        targets,
        pool,
        encoded,
        TASK_CAUSAL_LM,
        steps=12,
        lr=1e-3,
        eps=1e-3,
        batch_size=2,
        structure="low-rank",
        pad_token_id=0,
        generator=torch.Generator().manual_seed(0),
        momentum=0.9,
    )
    assert result.steps == 12 and len(result.indices) <= 8  # one total per seed used
    trained = _flat(targets).clone()
    restore_(targets, w0)
    sums = torch.zeros(len(pool))
    sums[result.indices] = torch.tensor(result.scalars)
    replay_(targets, pool, sums, 1e-3, "low-rank")
    torch.testing.assert_close(_flat(targets), trained, rtol=1e-5, atol=1e-6)


def test_momentum_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\)"):
        SeedMomentum(SeedPool.from_run_seed(0, 4), 1.0)
