"""A mixed federation's zeroth-order client on LoRA factors: the factors the server rebuilds
from its (seed, scalar) pairs are the factors the client ended at, and the steps learn."""

from __future__ import annotations

import pytest
import torch

from federated.model.lora import trainable_parameters, trainable_state
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION
from federated.zo.factor_steps import factor_targets, replay_pairs
from federated.zo.perturbation import dense_vector
from federated.zo.seed_pool import SeedPool
from federated.zo.trainer import train_zo
from tests.model_fixtures import perturb_trainable, tiny_inputs, tiny_lora_model

LR, EPS = 1e-3, 1e-3


def _examples(task: str, n: int) -> list[dict[str, list[int]]]:
    inputs = tiny_inputs(task, batch=n, length=10, seed=3)
    rows = [
        {"input_ids": ids.tolist(), "attention_mask": [1] * len(ids)} for ids in inputs["input_ids"]
    ]
    if task == TASK_CLASSIFICATION:
        for i, row in enumerate(rows):
            row["label"] = i % 3
    else:
        for row in rows:
            row["labels"] = list(row["input_ids"])
    return rows


@pytest.mark.parametrize("task", [TASK_CAUSAL_LM, TASK_CLASSIFICATION])
@pytest.mark.parametrize("structure", ["dense", "low-rank"])
def test_the_server_rebuilds_the_factors_the_client_ended_at(task: str, structure: str) -> None:
    model = tiny_lora_model(task)
    perturb_trainable(model)
    start = trainable_state(model)
    pool = SeedPool.from_run_seed(7, 16)
    result = train_zo(
        model,
        factor_targets(trainable_parameters(model)),
        pool,
        _examples(task, 8),
        task,
        steps=12,
        lr=LR,
        eps=EPS,
        batch_size=4,
        structure=structure,
        pad_token_id=0,
        generator=torch.Generator().manual_seed(0),
    )
    ended = trainable_state(model)
    rebuilt = replay_pairs(
        start,
        torch.tensor(result.indices),
        torch.tensor(result.scalars),
        pool,
        lr=LR,
        structure=structure,
    )
    assert rebuilt.keys() == ended.keys()
    moved = max(float((ended[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-4  # the steps moved the factors, not only the rounding
    for key in start:
        torch.testing.assert_close(rebuilt[key], ended[key], rtol=1e-5, atol=1e-6)


def test_replay_is_the_definition_step_by_step() -> None:
    """Against its definition: start − lr·Σ_i scalar_i·z_(seed_i), every z as one flat vector,
    with a seed taken twice."""
    start = {"b": torch.randn(4, 3), "a": torch.randn(3, 5), "head": torch.randn(2)}
    pool = SeedPool.from_run_seed(1, 8)
    indices, scalars = torch.tensor([3, 0, 3, 7]), torch.tensor([0.5, -2.0, 1.5, 0.25])
    rebuilt = replay_pairs(start, indices, scalars, pool, lr=0.1, structure="dense")
    flat = torch.cat([start[k].flatten() for k in sorted(start)])
    layout = factor_targets({k: start[k].clone() for k in start})
    for index, scalar in zip(indices.tolist(), scalars.tolist(), strict=True):
        flat = flat - 0.1 * scalar * dense_vector(layout, pool[index], "dense")
    got = torch.cat([rebuilt[k].flatten() for k in sorted(rebuilt)])
    torch.testing.assert_close(got, flat, rtol=1e-5, atol=1e-6)
    assert torch.equal(start["b"], start["b"].clone())  # the start is not moved in place
