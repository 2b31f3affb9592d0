"""SecAgg+ end to end through Flower's simulation engine: the masked round gives the plain
round's model within quantization error, survives dropouts, and carries client-level DP's noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from federated import message_keys as keys
from tests.simulate import simulate

pytestmark = pytest.mark.slow

# One round with no dropout: training is deterministic, so two runs differ only in aggregation.
LORA = {
    "model.name": "tiny-llama",
    "num-server-rounds": 1,
    "lora.rank": 4,
    "lora.dropout": 0.0,
    "train.lr": 0.02,
    "train.local-steps": 4,
    "strategy.fraction-evaluate": 0.0,
}
TOLERANCE = 1e-4  # a few quantization steps (2 · 8 / 2^22 each) over the clients' weights


def _run(tmp: Path, name: str, config: dict, clients: int = 4, **kwargs) -> Path:
    return simulate({**config, "output-dir": str(tmp), "run-name": name}, clients, **kwargs)


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(next((folder / "adapter").glob("*.safetensors"))))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=TOLERANCE)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("secagg")


def test_the_masked_round_gives_the_plain_fedavg_model(out: Path) -> None:
    plain = _adapter(_run(out, "plain", LORA))
    secure = _adapter(_run(out, "secure", {**LORA, "secagg.enabled": True}))
    _assert_close(secure, plain)
    assert any(float((secure[k] - plain[k]).abs().max()) > 0 for k in plain)  # it did quantize


def test_dropouts_after_sharing_leave_the_sum_of_the_others(out: Path) -> None:
    # Plain: partitions 0 and 1 send unusable updates and are rejected. Secure: they drop out
    # after sharing their secrets. Either way the model is the mean of partitions 2, 3 and 4.
    poisoned = {"train": {0: "nan", 1: "missing-tensor"}}
    plain = _adapter(_run(out, "plain-poisoned", LORA, clients=5, corrupt=poisoned))
    config = {**LORA, "secagg.enabled": True, "secagg.reconstruction-threshold": 0.5}
    folder = _run(out, "secure-dropouts", config, clients=5, drop_out=True)
    _assert_close(_adapter(folder), plain)


def test_fedkseed_seed_sums_add_up_under_secagg(out: Path) -> None:
    zo = {
        **LORA, "mode": "zo", "strategy.name": "fedkseed", "zo.pool-size": 256,
        "zo.params": "full", "zo.perturbation": "low-rank", "zo.lr": 2e-3,
        "train.local-steps": 10,
    }  # fmt: skip
    wide = {"secagg.enabled": True, "secagg.clipping-range": 1000.0, "secagg.quantization-bits": 26}
    sums = [
        load_file(str(_run(out, name, config) / "zo_sums.safetensors"))[keys.SEED_SUMS]
        for name, config in (("zo-plain", zo), ("zo-secure", {**zo, **wide}))
    ]
    assert int((sums[0] != 0).sum()) > 0
    torch.testing.assert_close(sums[1], sums[0], rtol=0, atol=1e-3)


def test_client_level_noise_reaches_the_securely_summed_update(out: Path) -> None:
    clip, sigma, clients = 0.01, 1.0, 4
    private = {**LORA, "secagg.enabled": True, "dp.client-level": True,
               "dp.client-clip-norm": clip}  # fmt: skip
    quiet = _adapter(_run(out, "quiet", {**private, "dp.client-noise-multiplier": 1e-9}))
    noisy = _adapter(_run(out, "noisy", {**private, "dp.client-noise-multiplier": sigma}))
    noise = torch.cat([(noisy[k] - quiet[k]).flatten() for k in quiet])
    # The clients clipped their own updates; the server's noise on the sum, over m clients.
    assert float(noise.std()) == pytest.approx(sigma * clip / clients, rel=0.1)

    # Distributed: each client adds noise for the 3 of 4 that dp.distributed-dropout 0.2 leaves,
    # so the sum of all 4 carries sqrt(4/3) times the central noise; the server adds none.
    distributed = {**private, "dp.client-noise-multiplier": sigma, "dp.distributed": True,
                   "strategy.min-available-nodes": clients}  # fmt: skip
    shared = _adapter(_run(out, "distributed", distributed))
    noise = torch.cat([(shared[k] - quiet[k]).flatten() for k in quiet])
    assert float(noise.std()) == pytest.approx(sigma * clip * (4 / 3) ** 0.5 / clients, rel=0.1)


def test_a_distributed_round_short_of_its_planned_clients_is_not_unmasked(out: Path) -> None:
    # Partitions 0 and 1 drop out after sharing: 3 of 5 remain, the noise was sized for 4.
    config = {
        **LORA, "secagg.enabled": True, "dp.client-level": True, "dp.distributed": True,
        "dp.client-noise-multiplier": 1.0, "secagg.reconstruction-threshold": 0.5,
        "strategy.min-available-nodes": 5,
    }  # fmt: skip
    folder = _run(out, "distributed-short", config, clients=5, drop_out=True)
    adapter = _adapter(folder)
    factors_b = [k for k in adapter if "lora_B" in k]
    assert factors_b and all(not adapter[k].any() for k in factors_b)  # still the start: B = 0
    rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert rounds[1]["client_dp_epsilon"] > 0  # the round still counts
