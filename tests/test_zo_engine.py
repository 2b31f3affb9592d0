"""The seed engine against its definition: pools, perturbations, replay, zeroth-order steps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from federated.config import parse_run_config
from federated.model.evaluation import evaluate_model
from federated.model.presets import load_base_model, load_tokenizer
from federated.model.workspace import client_indices, encode_indices, lora_model
from federated.zo.perturbation import STRUCTURES, Target, dense_vector, perturb_
from federated.zo.replay import BLOCK, replay_
from federated.zo.seed_pool import SeedPool
from federated.zo.targets import restore_, snapshot, zo_targets
from federated.zo.trainer import train_zo
from federated.zo.workspace import forget_zo_model, zo_model
from federated.zo.zo_model import ZoModel
from tests.model_fixtures import TINY_NUM_LABELS, tiny_lora_model

ROOT = Path(__file__).resolve().parents[1]


def _toy_targets(dtype: torch.dtype = torch.float32, sparse: bool = False) -> list[Target]:
    g = torch.Generator().manual_seed(0)
    matrix = torch.randn(7, 5, generator=g).to(dtype)
    vector = torch.randn(4, generator=g).to(dtype)
    if sparse:
        return [Target(matrix, torch.tensor([0, 3, 9, 34])), Target(vector)]
    return [Target(matrix), Target(vector)]


def _flat(targets: list[Target]) -> torch.Tensor:
    return torch.cat(
        [
            t.tensor.flatten() if t.indices is None else t.tensor.flatten()[t.indices]
            for t in targets
        ]
    ).double()


def test_pool_is_a_function_of_the_run_seed() -> None:
    assert SeedPool.from_run_seed(3, 64) == SeedPool.from_run_seed(3, 64)
    assert SeedPool.from_run_seed(3, 64) != SeedPool.from_run_seed(4, 64)
    assert len(set(SeedPool.from_run_seed(3, 4096).seeds)) == 4096


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("sparse", [False, True])
def test_perturbation_moves_by_scale_times_z_and_back(structure: str, sparse: bool) -> None:
    targets = _toy_targets(sparse=sparse)
    before = _flat(targets)
    z = dense_vector(targets, seed=11, structure=structure).double()
    perturb_(targets, 11, 0.5, structure)
    torch.testing.assert_close(_flat(targets) - before, 0.5 * z, rtol=1e-5, atol=1e-6)
    perturb_(targets, 11, -0.5, structure)
    torch.testing.assert_close(_flat(targets), before, rtol=1e-5, atol=1e-6)


def test_low_rank_matrices_are_rank_one_with_unit_variance() -> None:
    target = Target(torch.zeros(300, 200))
    perturb_([target], 5, 1.0, "low-rank")
    assert torch.linalg.matrix_rank(target.tensor) == 1
    assert target.tensor.var().item() == pytest.approx(1.0, rel=0.15)


def test_same_seed_same_vector_in_every_dtype() -> None:
    for structure in STRUCTURES:
        moves = []
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            targets = _toy_targets(dtype)
            before = _flat(targets)
            perturb_(targets, 7, 1.0, structure)
            moves.append(_flat(targets) - before)
        torch.testing.assert_close(moves[1], moves[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(moves[2], moves[0], rtol=0.05, atol=0.05)  # bf16 rounding


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize("sparse", [False, True])
def test_replay_is_w0_minus_lr_times_the_sum_of_scaled_perturbations(
    structure: str, sparse: bool
) -> None:
    pool = SeedPool.from_run_seed(1, BLOCK * 2 + 20)  # crosses block boundaries
    sums = torch.randn(len(pool), generator=torch.Generator().manual_seed(2))
    sums[::3] = 0.0  # seeds never drawn are skipped
    targets = _toy_targets(sparse=sparse)
    w0 = _flat(targets)
    replayed = replay_(targets, pool, sums, 0.01, structure)
    expected = w0 - 0.01 * sum(
        float(sums[j]) * dense_vector(targets, pool[j], structure).double()
        for j in range(len(pool))
    )
    assert replayed == int((sums != 0).sum())
    torch.testing.assert_close(_flat(targets), expected, rtol=1e-4, atol=1e-5)


REPLAY_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from tests.test_zo_engine import replay_tiny
torch.save(replay_tiny(sys.argv[1]), sys.argv[2])
"""


def replay_tiny(structure: str) -> list[torch.Tensor]:
    """Tiny Llama's weights after replaying fixed sums over every parameter."""
    model = load_base_model("tiny-llama", "causal-lm", seed=0)
    targets = zo_targets(model, "full")
    saved = snapshot(targets)
    pool = SeedPool.from_run_seed(0, 96)
    sums = torch.linspace(-1.0, 1.0, len(pool))
    replay_(targets, pool, sums, 1e-3, structure)
    out = [t.tensor.detach().clone() for t in targets]
    restore_(targets, saved)
    return out


# A subprocess each (about 10 s): the end-to-end layer's.
@pytest.mark.slow
@pytest.mark.parametrize("structure", ["dense", "low-rank"])
def test_replay_is_bit_identical_in_another_process(structure: str, tmp_path: Path) -> None:
    path = tmp_path / "replayed.pt"
    subprocess.run(
        [sys.executable, "-c", REPLAY_SCRIPT, structure, str(path)],
        cwd=ROOT,
        check=True,
        env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    here, there = replay_tiny(structure), torch.load(path)
    assert all(torch.equal(a, b) for a, b in zip(here, there, strict=True))


def test_sparse_targets_take_the_largest_entries_of_each_matrix() -> None:
    model = tiny_lora_model("classification").get_base_model()
    targets = zo_targets(model, "sparse", sparse_fraction=0.1)
    for target in targets:
        if target.indices is not None:
            flat = target.tensor.detach().abs().flatten()
            chosen = flat[target.indices]
            assert target.indices.numel() == max(1, -(-flat.numel() // 10))
            assert chosen.min() >= flat.kthvalue(flat.numel() - target.indices.numel()).values


def test_zeroth_order_steps_lower_the_loss_without_gradients() -> None:
    raw = {"model.name": "tiny-bert", "data.name": "wordnet", "data.num-classes": TINY_NUM_LABELS}
    config = parse_run_config({**raw, "data.max-per-class": 100})
    model = tiny_lora_model("classification")  # a fresh model: no gradients left by other tests
    tokenizer = load_tokenizer("tiny-bert")
    train_ids, _ = client_indices(config, 0, 2)
    encoded = encode_indices(config, tokenizer, train_ids)[:64]
    pad = tokenizer.pad_token_id
    targets = zo_targets(model, "lora")
    before = evaluate_model(model, encoded, config.task, batch_size=64, pad_token_id=pad).loss
    result = train_zo(
        model,
        targets,
        SeedPool.from_run_seed(0, 512),
        encoded,
        config.task,
        steps=150,
        lr=0.02,
        eps=1e-3,
        batch_size=16,
        structure="dense",
        pad_token_id=pad,
        generator=torch.Generator().manual_seed(0),
    )
    after = evaluate_model(model, encoded, config.task, batch_size=64, pad_token_id=pad).loss
    assert after < before - 0.05
    assert len(result.indices) == len(result.scalars) == 150
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("structure", STRUCTURES)
def test_replay_cache_catches_up_to_a_full_rebuild(structure: str) -> None:
    pool = SeedPool.from_run_seed(0, 200)
    g = torch.Generator().manual_seed(1)
    earlier = torch.zeros(len(pool))
    earlier[:40] = torch.randn(40, generator=g)
    later = earlier.clone()
    later[30:90] += torch.randn(60, generator=g)  # a few rounds later: some sums moved, some new

    def model(cache: bool) -> ZoModel:
        base = load_base_model("tiny-llama", "causal-lm", seed=0)
        return ZoModel(
            base, None, zo_targets(base, "full"), pool, lr=1e-3, structure=structure, cache=cache
        )

    cached, rebuilt = model(cache=True), model(cache=False)
    cached.load(earlier)
    assert cached.load(later) == 60  # only the seeds whose sums changed are replayed
    assert rebuilt.load(later) == 90
    for a, b in zip(cached.targets, rebuilt.targets, strict=True):
        torch.testing.assert_close(a.tensor, b.tensor, rtol=1e-5, atol=1e-6)
    # A local step along seed 0 with scalar 2.5: counted, then replayed away by the next load.
    perturb_(cached.targets, pool[0], -1e-3 * 2.5, structure)
    cached.moved_by([0], [2.5])
    assert cached.load(later) == 1
    for a, b in zip(cached.targets, rebuilt.targets, strict=True):
        torch.testing.assert_close(a.tensor, b.tensor, rtol=1e-5, atol=1e-6)


def test_a_forgotten_lora_model_reloads_at_w0_beside_the_lora_clients_model() -> None:
    config = parse_run_config(
        {
            "model.name": "tiny-llama",
            "data.name": "chatterbot",
            "mode": "zo",
            "strategy.name": "fedkseed",
            "zo.params": "lora",
            "zo.pool-size": 8,
        }
    )
    zo = zo_model(config)
    w0 = [t.tensor.clone() for t in zo.targets]
    perturb_(zo.targets, zo.pool[0], 0.5, "dense")  # a round stopped mid-step
    forget_zo_model()
    again = zo_model(config)
    assert again is not zo
    for tensor, start in zip((t.tensor for t in again.targets), w0, strict=True):
        torch.testing.assert_close(tensor, start, rtol=0, atol=0)
    # The LoRA clients' cached model is another object, still trainable.
    local = lora_model(config)
    assert local.model is not again.model
    assert any(p.requires_grad for p in local.model.parameters())
    forget_zo_model()
