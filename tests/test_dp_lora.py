"""DP-SGD of the LoRA weights: per-example clipping, the noise's size, Poisson sampling."""

from __future__ import annotations

import pytest
import torch

from client.dp_lora_trainer import physical_batches, private_gradient, private_model, train_lora_dp
from federated.config import parse_run_config
from federated.model.presets import load_tokenizer
from federated.model.workspace import client_indices, encode_indices
from federated.privacy.sampling import poisson_batches
from federated.tasks import TASK_CLASSIFICATION
from tests.model_fixtures import TINY_NUM_LABELS, tiny_lora_model

MODES = ("hooks", "functorch", "ghost")
BATCH = 8


@pytest.fixture(scope="module")
def examples() -> tuple[list[dict], int]:
    raw = {"model.name": "tiny-bert", "data.name": "wordnet", "data.num-classes": TINY_NUM_LABELS}
    config = parse_run_config({**raw, "data.max-per-class": 40, "data.partitioner": "iid"})
    tokenizer = load_tokenizer("tiny-bert")
    encoded = encode_indices(config, tokenizer, client_indices(config, 0, 2)[0])[:BATCH]
    return encoded, tokenizer.pad_token_id


def _gradient(
    encoded: list[dict],
    pad: int,
    mode: str,
    *,
    clip: float,
    noise: float,
    expected: int,
    seed=0,
    physical: int = 0,
) -> torch.Tensor:
    """The privatised gradient of one batch, taken ``physical`` examples at a time (0: whole),
    flattened over the trained parameters."""
    model = tiny_lora_model(TASK_CLASSIFICATION)
    for module in model.modules():  # opacus captures in train mode: make it deterministic
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.0)
    generator = torch.Generator().manual_seed(seed)
    with private_model(model, optimizer, mode, clip, noise, expected, generator) as (
        wrapped,
        dp_optimizer,
    ):
        chunks = physical_batches(encoded, range(len(encoded)), physical, pad)
        private_gradient(wrapped, dp_optimizer, chunks, TASK_CLASSIFICATION, mode)
        return torch.cat([p.grad.flatten() for p in params]).clone()


@pytest.mark.parametrize("mode", MODES)
def test_the_batch_gradient_is_the_mean_of_clipped_per_example_gradients(examples, mode) -> None:
    encoded, pad = examples
    clip = 1e-3  # below every example's gradient norm: each one is clipped
    alone = [_gradient([e], pad, mode, clip=clip, noise=0.0, expected=1) for e in encoded]
    for g in alone:  # one example's contribution is at most the bound (here: exactly at it)
        assert float(g.norm()) == pytest.approx(clip, rel=1e-3)
    batch = _gradient(encoded, pad, mode, clip=clip, noise=0.0, expected=BATCH)
    torch.testing.assert_close(batch, torch.stack(alone).sum(0) / BATCH, rtol=1e-3, atol=1e-9)


def test_per_sample_modes_agree(examples) -> None:
    encoded, pad = examples
    grads = [_gradient(encoded, pad, m, clip=0.05, noise=0.0, expected=BATCH) for m in MODES]
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("mode", MODES)
def test_the_noise_has_standard_deviation_sigma_c_over_the_batch(examples, mode) -> None:
    encoded, pad = examples
    clip, sigma = 0.5, 2.0
    clean = _gradient(encoded, pad, mode, clip=clip, noise=0.0, expected=BATCH)
    noisy = _gradient(encoded, pad, mode, clip=clip, noise=sigma, expected=BATCH, seed=7)
    noise = noisy - clean
    assert noise.numel() > 2000
    # Entries are independent N(0, (sigma·C/B)²): the sample std is within a few percent.
    assert float(noise.std()) == pytest.approx(sigma * clip / BATCH, rel=0.05)
    assert abs(float(noise.mean())) < 4 * sigma * clip / BATCH / noise.numel() ** 0.5


def test_poisson_batches_sample_each_example_at_the_rate() -> None:
    generator = torch.Generator().manual_seed(0)
    sizes = [len(b) for b in poisson_batches(200, 0.1, 2000, generator)]
    mean = sum(sizes) / len(sizes)
    assert mean == pytest.approx(20, rel=0.02)
    assert min(sizes) < 15 < 25 < max(sizes)  # sizes vary: not a fixed batch


@pytest.mark.parametrize("mode", MODES)
def test_a_batch_in_physical_chunks_clips_each_example_and_noises_once(examples, mode) -> None:
    encoded, pad = examples
    clip = 1e-3  # every example clipped: the chunks' sum is the sum of the bounded gradients
    whole = _gradient(encoded, pad, mode, clip=clip, noise=0.0, expected=BATCH)
    chunked = _gradient(encoded, pad, mode, clip=clip, noise=0.0, expected=BATCH, physical=3)
    torch.testing.assert_close(chunked, whole, rtol=1e-3, atol=1e-9)
    # With noise from the same generator: one draw of σC/B on the whole sum, as in one pass.
    noisy = _gradient(encoded, pad, mode, clip=clip, noise=2.0, expected=BATCH, seed=7)
    noisy_chunked = _gradient(
        encoded, pad, mode, clip=clip, noise=2.0, expected=BATCH, seed=7, physical=3
    )
    torch.testing.assert_close(noisy_chunked, noisy, rtol=1e-3, atol=1e-7)
    assert float((noisy - whole).std()) == pytest.approx(2.0 * clip / BATCH, rel=0.05)


def test_dp_sgd_in_physical_chunks_trains_the_model_a_whole_batch_trains(examples) -> None:
    encoded, pad = examples
    config = parse_run_config(
        {
            "model.name": "tiny-bert",
            "data.name": "wordnet",
            "train.local-steps": 3,
            "train.lr": 1e-2,
        }
    )

    def trained(physical: int) -> torch.Tensor:
        model = tiny_lora_model(TASK_CLASSIFICATION)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        train_lora_dp(
            model,
            encoded,
            TASK_CLASSIFICATION,
            config.train,
            noise_multiplier=1.0,
            max_grad_norm=0.1,
            sample_rate=0.75,
            expected_batch=6.0,
            mode="hooks",
            pad_token_id=pad,
            generator=torch.Generator().manual_seed(3),
            physical_batch=physical,
        )
        return torch.cat([p.detach().flatten() for p in model.parameters() if p.requires_grad])

    torch.testing.assert_close(trained(2), trained(0), rtol=1e-4, atol=1e-6)
