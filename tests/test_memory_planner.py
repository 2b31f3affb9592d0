"""The memory estimate against a measured peak, and the planner's choices against a profile's
memory: the configured job, a smaller rank or batch, zeroth-order, or left out with the reason."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import pytest

from client.memory_measure import measure
from federated.config import parse_run_config
from federated.devices import runtime_memory
from federated.devices.memory_estimate import estimate_memory
from federated.devices.planner import plan_device
from federated.devices.profiles import load_profiles
from federated.devices.split_estimate import estimate_split_memory
from federated.model.numerics import PLAIN_FP32

LM = {
    "model.name": "tiny-llama",
    "lora.rank": 8,
    "train.batch-size": 16,
    "model.max-length": 128,
    "strategy.name": "hetlora",
}
# Zeroth-order needs less than backpropagation where the model's weights are most of a job: a
# pretrained model's sizes (planning only estimates, on a meta-device model).
PRETRAINED = {**LM, "model.name": "smollm2-135m"}
CLASSIFIER = {"model.name": "tiny-bert", "data.name": "wordnet", "data.num-classes": 3}
MINILM = {**CLASSIFIER, "model.name": "minilm-l6", "data.num-classes": 8}
# The planner promises that a job fits; a promise this much above the peak wastes a device.
MOST_ABOVE_PEAK = 1.2


@pytest.fixture(scope="module")
def default_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The environment a node has unless its operator tunes the allocator, and a runtime
    measured now (once for the module's measurements), beside the jobs' measurements: a
    runtime's resident set holds the pages of torch's libraries that the page cache lets a
    fault map, so one cached from another checkout (or a colder cache) can differ by tens of
    MB from the same software's now."""
    folder = tmp_path_factory.mktemp("runtime")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for key in [k for k in os.environ if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
            monkeypatch.delenv(key)
        monkeypatch.setattr(runtime_memory, "cache_dir", lambda: folder)
        runtime_memory.runtime_bytes.cache_clear()
        yield
        runtime_memory.runtime_bytes.cache_clear()


def _check_estimate_against_peak(config: dict, batch: int, length: int) -> None:
    parsed = parse_run_config(config)
    estimate = estimate_memory(parsed, batch, length, parsed.lora.rank)
    measured = measure(config, batch, length)
    assert estimate.runtime == pytest.approx(measured["runtime"], rel=0.05)
    assert measured["peak"] <= estimate.total <= MOST_ABOVE_PEAK * measured["peak"]


# A subprocess each (10 to 20 s): the end-to-end layer's.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "batch", "length"),
    [
        (LM, 8, 96),
        (CLASSIFIER, 32, 128),
        ({**LM, "mode": "zo", "strategy.name": "fedkseed"}, 8, 96),
        (
            {**LM, "dp.mode": "record", "dp.noise-multiplier": 1.0, "strategy.name": "fedavg"},
            *(8, 96),
        ),
    ],
)
def test_the_estimate_covers_the_measured_peak_of_a_default_node(
    config, batch, length, default_environment
) -> None:
    _check_estimate_against_peak(config, batch, length)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "batch", "length"),
    [
        ({"model.name": "smollm2-135m", "lora.rank": 16}, 2, 256),
        (MINILM, 32, 128),  # many mid-size activations: what glibc's default keeps most of
    ],
)
def test_the_estimate_covers_the_measured_peak_of_pretrained_models(
    config, batch, length, default_environment
) -> None:
    _check_estimate_against_peak(config, batch, length)


@pytest.mark.slow
def test_the_split_estimate_covers_the_measured_peak_of_a_split_device(
    default_environment,
) -> None:
    """A split device's round (local-loss steps, the pruning pass, its side of the exchange)
    holding only its parts: 2 of SmolLM2's 30 blocks, the embeddings and the LM head."""
    config = {"model.name": "smollm2-135m", "mode": "split", "split.cut-layer": 2}
    parsed = parse_run_config(config)
    estimate = estimate_split_memory(parsed, 4, 128, PLAIN_FP32)
    measured = measure(config, 4, 128)
    assert estimate.runtime == pytest.approx(measured["runtime"], rel=0.05)
    assert measured["peak"] <= estimate.total <= MOST_ABOVE_PEAK * measured["peak"]


def _device(memory_gb: float):
    return replace(load_profiles()["pi5"], name="device", memory_bytes=memory_gb * 1e9)


def test_the_planner_keeps_the_job_that_fits_and_shrinks_the_one_that_does_not() -> None:
    config = parse_run_config(LM)
    full = estimate_memory(config, 16, 128, 8).total
    keep = plan_device(config, _device(full / 1e9 + 0.01), smaller_ranks=True, zo_fallback=True)
    assert (keep.mode, keep.rank, keep.batch) == ("lora", 8, 16)

    smaller = plan_device(config, _device(full / 1e9 - 0.01), smaller_ranks=True, zo_fallback=True)
    assert smaller.mode == "lora" and smaller.estimate.total <= full - 0.01e9
    assert (smaller.rank, smaller.batch) != (8, 16) and "reduced" in smaller.reason


def test_zeroth_order_takes_a_device_that_cannot_backpropagate_and_else_it_is_left_out() -> None:
    config = parse_run_config(PRETRAINED)
    zo_need = estimate_memory(replace(config, mode="zo"), 1, 128, 8).total
    lora_need = estimate_memory(config, 1, 128, 1).total
    assert zo_need < lora_need
    between = _device((zo_need + lora_need) / 2e9)
    assert plan_device(config, between, smaller_ranks=True, zo_fallback=True).mode == "zo"
    left = plan_device(config, between, smaller_ranks=True, zo_fallback=False)
    assert left.mode is None and "left out: the smallest job needs" in left.reason
    assert "device has" in left.reason


def test_split_learning_takes_a_device_too_small_for_zeroth_order_at_the_deepest_cut() -> None:
    split = {"simulation.split-fallback": True, "simulation.population": "pi5:1"}
    config = parse_run_config({**PRETRAINED, **split, "train.batch-size": 1, "split.cut-layer": 3})
    zo_need = estimate_memory(replace(config, mode="zo"), 1, 128, 8).total
    cuts = {
        cut: estimate_split_memory(
            replace(config, split=replace(config.split, cut_layer=cut)), 1, 128, PLAIN_FP32
        ).total
        for cut in (2, 3)
    }
    assert cuts[2] < cuts[3] < zo_need
    small = _device((cuts[2] + cuts[3]) / 2e9)
    plan = plan_device(config, small, smaller_ranks=False, zo_fallback=True, split_fallback=True)
    assert (plan.mode, plan.cut, plan.batch) == ("split", 2, 1)
    assert "split at 2 block(s), batch 1" in plan.reason
    left = plan_device(config, small, smaller_ranks=False, zo_fallback=True)
    assert left.mode is None


def test_a_dp_run_with_physical_chunks_keeps_its_logical_batch_where_a_chunk_fits() -> None:
    private = {
        **LM,
        "dp.mode": "record",
        "dp.noise-multiplier": 1.0,
        "strategy.name": "fedavg",
    }
    whole = parse_run_config(private)
    chunked = parse_run_config({**private, "dp.record.physical-batch": 4})
    device = _device(estimate_memory(whole, 4, 128, 8).total / 1e9 + 0.01)
    assert plan_device(whole, device, smaller_ranks=False, zo_fallback=False).batch < 16
    plan = plan_device(chunked, device, smaller_ranks=False, zo_fallback=False)
    assert (plan.mode, plan.batch) == ("lora", 16)
