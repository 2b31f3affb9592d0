"""SecAgg+'s arithmetic with real keys and shares: masks cancel in the sum, a masked vector
reveals nothing of its update, dropouts are unmasked from shares, quantization stays small."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, MetricRecord
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares

from federated.config import ConfigError, parse_run_config
from federated.model.workspace import lora_model
from federated.protocol import message_keys
from federated.protocol.global_model import GlobalModel
from federated.secagg import protocol as p
from federated.secagg.keys import agree, neighbours, new_key_pair, threshold
from federated.secagg.masking import (
    MOD,
    dequantize_sum,
    mask,
    quantize,
    rounding_margin,
    rounding_problem,
    sum_masked,
    unmask,
)
from strategies.distributed_dp import update_dimension
from strategies.registry import build_strategy

RANGE, BITS, SIZE = 8.0, 22, 5000


def _clients(n: int, seed: int = 0) -> tuple[list[int], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    nodes = sorted(int(x) for x in rng.choice(2**62, size=n, replace=False))
    updates = [rng.normal(0, 0.05, SIZE) for _ in nodes]
    return nodes, updates


def _masked(nodes, quantized, keys, seeds, present):
    """Each client's masked vector, with pairwise masks for the peers in ``present``."""
    out = {}
    for node, q in zip(nodes, quantized, strict=True):
        pair = {other: agree(keys[node][0], keys[other][1]) for other in present if other != node}
        out[node] = mask(q, seeds[node], pair, node)
    return out


def test_the_masks_cancel_and_the_server_gets_the_plain_sum() -> None:
    nodes, updates = _clients(5)
    keys = {n: new_key_pair() for n in nodes}
    seeds = {n: bytes([i]) * 32 for i, n in enumerate(nodes)}
    quantized = [quantize(u, RANGE, BITS) for u in updates]
    masked = _masked(nodes, quantized, keys, seeds, nodes)
    # On the wire a masked entry takes four bytes, as a float32 of the plain update does.
    assert all(m.dtype == np.uint32 for m in masked.values())
    total = sum_masked(masked.values(), quantized[0].size)
    unmasked = unmask(total, seeds.values(), [])
    assert np.array_equal(unmasked, sum(quantized) % MOD)  # exact, modulo 2^32
    recovered = dequantize_sum(unmasked, len(nodes), RANGE, BITS)
    step = 2 * RANGE / ((1 << BITS) - 1)
    assert np.abs(recovered - sum(updates)).max() <= len(nodes) * step


def test_one_masked_vector_looks_uniform_and_unrelated_to_its_update() -> None:
    nodes, updates = _clients(3)
    keys = {n: new_key_pair() for n in nodes}
    seeds = {n: np.random.default_rng(i).bytes(32) for i, n in enumerate(nodes)}
    quantized = [quantize(u, RANGE, BITS) for u in updates]
    one = _masked(nodes, quantized, keys, seeds, nodes)[nodes[0]]
    # Uniform over [0, 2^32): mean and spread of a uniform, nothing of the update's scale.
    assert abs(one.mean() / MOD - 0.5) < 0.02
    assert abs(one.std() / MOD - 12**-0.5) < 0.02
    assert abs(np.corrcoef(one, updates[0])[0, 1]) < 0.05


def test_a_client_that_drops_after_sharing_is_unmasked_from_the_shares() -> None:
    nodes, updates = _clients(5, seed=1)
    keys = {n: new_key_pair() for n in nodes}
    seeds = {n: np.random.default_rng(10 + i).bytes(32) for i, n in enumerate(nodes)}
    t = threshold(len(nodes), 0.6)
    # Every client shares its mask secret key; the survivors hold one share each of it.
    key_shares = {n: create_shares(keys[n][0], t, len(nodes)) for n in nodes}
    quantized = [quantize(u, RANGE, BITS) for u in updates]
    masked = _masked(nodes, quantized, keys, seeds, nodes)
    gone = nodes[2]
    survivors = [n for n in nodes if n != gone]
    total = sum_masked((masked[n] for n in survivors), quantized[0].size)
    # Only t of the survivors answer the unmask stage.
    secret = combine_shares([key_shares[gone][i] for i in range(t)])
    assert secret == keys[gone][0]
    orphans = [(n, gone, agree(secret, keys[n][1])) for n in survivors]
    unmasked = unmask(total, [seeds[n] for n in survivors], orphans)
    expected = sum(q for n, q in zip(nodes, quantized, strict=True) if n != gone) % MOD
    assert np.array_equal(unmasked, expected)
    try:  # fewer shares than the threshold rebuild nothing (or garbage)
        few = combine_shares([key_shares[gone][i] for i in range(t - 1)])
    except ValueError:
        few = None
    assert few != keys[gone][0]


def test_stochastic_quantization_is_unbiased() -> None:
    value = np.full(200_000, 0.123456789)
    step = 2 * RANGE / ((1 << BITS) - 1)
    back = dequantize_sum(quantize(value, RANGE, BITS), 1, RANGE, BITS)
    assert np.abs(back - value).max() <= step
    assert abs(back.mean() - 0.123456789) < step / 50


def test_entries_beyond_the_clipping_range_are_clipped() -> None:
    back = dequantize_sum(quantize(np.array([-100.0, 100.0]), RANGE, BITS), 1, RANGE, BITS)
    assert back == pytest.approx([-RANGE, RANGE])


@pytest.mark.parametrize(("count", "fraction"), [(3, 1.0), (10, 1.0), (10, 0.5), (31, 0.2)])
def test_sharing_groups_are_symmetric_rings_and_thresholds_a_majority(count, fraction) -> None:
    nodes = list(range(100, 100 + count))
    groups = neighbours(nodes, fraction)
    sizes = {len(g) for g in groups.values()}
    assert len(sizes) == 1
    assert sizes.pop() % 2 == 1 or fraction == 1.0
    for node, group in groups.items():
        assert node in group
        assert all(node in groups[other] for other in group)
        t = threshold(len(group), 0.5)
        assert len(group) >= t > len(group) / 2


def _collect_config(bound: float, bits: int) -> ConfigRecord:
    return ConfigRecord(
        {
            p.CLIP_NORM: bound,
            p.CLIPPING_RANGE: RANGE,
            p.BITS: bits,
            p.MAX_WEIGHT: 1000.0,
            p.COUNT_BIT: True,
            p.POOL_SIZE: 0,
        }
    )


GRID = [
    (entries, bits, bound)
    for entries in (2_000, 5_000, 200_000)
    for bits in (8, 10, 16, 22)
    for bound in (0.5, 1.0, 3.0)
]


@pytest.mark.parametrize(("entries", "bits", "bound"), GRID)
def test_the_decoded_update_stays_within_the_bound_at_every_accepted_setting(
    entries: int, bits: int, bound: float
) -> None:
    """Client-level DP's sensitivity is the bound: rounding must not push a decoded update past
    it, for updates at zero, at the bound and far beyond it. A setting where it could is refused
    at start (and by the client itself, should a server send it)."""
    accepted = rounding_problem(entries, RANGE, bits, bound, keep=0.5) is None
    config, metrics = _collect_config(bound, bits), MetricRecord({message_keys.NUM_EXAMPLES: 10})
    received, rng = {"w": torch.zeros(entries)}, np.random.default_rng(entries + bits)
    shape = p.VectorLayout([("w", (entries,))], count_bit=True)
    for norm in (0.0, bound * (1 - 1e-9), 10 * bound):  # none, just inside, far outside
        update = rng.normal(size=entries)
        upload = {"w": torch.from_numpy(update * norm / np.linalg.norm(update))}
        if not accepted and rounding_margin(entries, RANGE, bits) > bound:
            with pytest.raises(ValueError, match="secagg.quantization-bits >= "):
                p.update_vector(received, upload, metrics, config)
            continue
        vector, bit = p.update_vector(received, upload, metrics, config)
        assert bit == int(norm <= bound)
        sent = p.quantized_vector(vector, bit, config)
        decoded = p.split_sum(sent, shape, RANGE, bits, count=1)
        assert float(decoded.tensors["w"].norm()) <= bound
        assert decoded.unclipped == bit  # the count travels as the integer itself: exact
        assert decoded.weight == 1.0  # an exact integer entry


@pytest.mark.parametrize(
    ("entries", "bits", "bound", "needed"), [(2000, 8, 1.0, 11), (5000, 10, 0.5, 13)]
)
def test_a_quantization_too_coarse_for_the_bound_names_the_bits_it_needs(
    entries: int, bits: int, bound: float, needed: int
) -> None:
    problem = rounding_problem(entries, RANGE, bits, bound, keep=0.5)
    assert problem is not None and f"secagg.quantization-bits >= {needed}" in problem
    assert (
        rounding_margin(entries, RANGE, needed)
        <= bound / 2
        < rounding_margin(entries, RANGE, needed - 1)
    )


def test_a_run_whose_quantization_cannot_keep_the_clip_bound_is_refused_at_start() -> None:
    run = {
        "model.name": "tiny-llama",
        "lora.rank": 4,
        "secagg.enabled": True,
        "dp.mode": "client",
        "dp.noise-multiplier": 1.0,
    }
    config = parse_run_config(run)
    initial = GlobalModel(dict(lora_model(config).initial))
    strategy = build_strategy(config, initial)
    entries = update_dimension(strategy, config)
    # Adaptive clipping never takes the bound where rounding would take over half of it.
    assert strategy.mechanism.floor == pytest.approx(2 * rounding_margin(entries, RANGE, BITS))
    coarse = parse_run_config({**run, "secagg.quantization-bits": 8})
    with pytest.raises(
        ConfigError,
        match=r"'secagg.quantization-bits' = 8: rounding 1792 entries "
        r".* it needs secagg.quantization-bits >= 11",
    ):
        build_strategy(coarse, initial)
