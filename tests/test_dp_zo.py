"""DP-ZO: each example's scalar gradient clipped, Gaussian noise of the right size on the sum."""

from __future__ import annotations

import pytest
import torch

from federated.config import parse_run_config
from federated.model.presets import load_tokenizer
from federated.model.workspace import client_indices, encode_indices
from federated.zo.seed_pool import SeedPool
from federated.zo.targets import zo_targets
from federated.zo.trainer import ZoPrivacy, private_scalar, train_zo
from tests.model_fixtures import TINY_NUM_LABELS, tiny_lora_model


def _privacy(
    noise: float, clip: float, rate: float, expected: float = 4.0, seed: int = 0
) -> ZoPrivacy:
    return ZoPrivacy(noise, clip, rate, expected, torch.Generator().manual_seed(seed))


def test_each_example_moves_the_scalar_by_at_most_the_clip_bound() -> None:
    per_example = torch.tensor([100.0, -100.0, 0.5, -0.25])
    # Clipped to ±1, summed, over the expected batch size q·ñ = 0.1 · 40 = 4.
    scalar = private_scalar(per_example, _privacy(0.0, 1.0, 0.1, expected=4.0))
    assert scalar == pytest.approx((1.0 - 1.0 + 0.5 - 0.25) / 4)
    changed = per_example.clone()
    changed[0] = -1e6  # one record replaced by anything moves the sum by at most 2C
    moved = private_scalar(changed, _privacy(0.0, 1.0, 0.1, expected=4.0)) - scalar
    assert abs(moved) * 4 <= 2.0 + 1e-9


def test_the_noise_on_the_scalar_has_standard_deviation_sigma_c_over_qn() -> None:
    sigma, clip, rate, n = 1.5, 0.3, 0.25, 64
    privacy = _privacy(sigma, clip, rate, expected=rate * n, seed=3)
    draws = torch.tensor([private_scalar(torch.zeros(5), privacy) for _ in range(20_000)])
    assert float(draws.std()) == pytest.approx(sigma * clip / (rate * n), rel=0.03)
    assert abs(float(draws.mean())) < 4 * sigma * clip / (rate * n) / 20_000**0.5


def test_private_zeroth_order_steps_send_only_bounded_scalars() -> None:
    raw = {"model.name": "tiny-bert", "data.name": "wordnet", "data.num-classes": TINY_NUM_LABELS}
    config = parse_run_config({**raw, "data.max-per-class": 40})
    tokenizer = load_tokenizer("tiny-bert")
    encoded = encode_indices(config, tokenizer, client_indices(config, 0, 2)[0])[:40]
    model = tiny_lora_model("classification")
    targets = zo_targets(model, "lora")
    before = [t.tensor.clone() for t in targets]
    clip, rate = 1e-3, 0.2
    result = train_zo(
        model,
        targets,
        SeedPool.from_run_seed(0, 64),
        encoded,
        config.task,
        steps=30,
        lr=0.01,
        eps=1e-3,
        batch_size=8,
        structure="dense",
        pad_token_id=tokenizer.pad_token_id,
        generator=torch.Generator().manual_seed(0),
        privacy=_privacy(0.0, clip, rate, expected=rate * len(encoded)),
    )
    # No noise: each scalar is a sum of at most n clipped terms over q·n.
    assert all(abs(s) <= clip / rate + 1e-12 for s in result.scalars)
    assert any(abs(s) > 0 for s in result.scalars)
    assert any(not torch.equal(t.tensor, b) for t, b in zip(targets, before, strict=True))
