"""SecAgg+ against a client that alters its masked vector. The server cannot see which client
did it, but it sees the sum: one that no clients following the protocol could make (a weight,
an entry, a move or a norm out of their range) is discarded with its reason, and the round is
tried again; under distributed DP the round still counts. The checks themselves, on sums of
real clients' vectors: honest sums pass, each kind of tampering is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Array, ConfigRecord, Message, MetricRecord

from federated.config import parse_run_config
from federated.protocol import message_keys as keys
from federated.secagg import metric_sums
from federated.secagg import protocol as p
from federated.secagg.masking import MOD
from server.start_checks import RunFailure
from server.sum_checks import UpdateBounds, masked_sum_problem
from tests.in_process import FIRST_NODE, run_federation
from tests.test_secagg_rounds import LORA, adapter, assert_close

SECURE = {**LORA, "secagg.enabled": True}


def _adding(value: int, tries: set[str] | None = None):
    """A first node that adds ``value`` to every entry of its masked vector (in the round
    tries ``tries``, '<round>.<try>'; every try when None)."""

    def tamper(reply: Message) -> Message:
        meta = reply.metadata
        if meta.src_node_id != FIRST_NODE or meta.message_type != f"train.{p.COLLECT}":
            return reply
        if tries is not None and meta.group_id not in tries or reply.has_error():
            return reply
        record = reply.content.array_records[keys.ARRAYS]
        masked = record[p.MASKED].numpy().astype(np.int64)
        record[p.MASKED] = Array(((masked + value) % MOD).astype(np.uint32))
        return reply

    return tamper


def _rounds(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_spoiled_sum_is_discarded_and_the_round_tried_again(tmp_path: Path) -> None:
    clean = adapter(run_federation(tmp_path, "clean", SECURE))
    folder = run_federation(tmp_path, "spoiled", SECURE, tamper_reply=_adding(2**31, {"1.1"}))
    # The first try's sum was thrown away; the second try is the clean round.
    assert_close(adapter(folder), clean)
    retried = _rounds(folder)[1]["retried"]
    assert len(retried) == 1 and retried[0].startswith("try 1: the unmasked sum cannot come")
    assert "its weights sum to" in retried[0] and "the sum is discarded" in retried[0]


@pytest.mark.slow
def test_a_client_that_spoils_every_try_ends_the_run_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(
        RunFailure,
        match=r"round 1 did not train in 3 tries \(the unmasked sum "
        r"cannot come from 4 clients.*no checkpoint to resume from",
    ):
        run_federation(tmp_path, "spoiled", SECURE, tamper_reply=_adding(2**31))
    assert [r["round"] for r in _rounds(tmp_path / "spoiled")] == [0]  # the model never moved


@pytest.mark.slow
def test_under_distributed_dp_a_spoiled_sum_is_discarded_and_the_round_counts(
    tmp_path: Path,
) -> None:
    config = {
        **SECURE,
        "dp.mode": "distributed",
        "dp.noise-multiplier": 1.0,
        "strategy.min-available-nodes": 4,
    }
    folder = run_federation(tmp_path, "distributed", config, tamper_reply=_adding(2**31))
    factors = adapter(folder)
    assert all(not factors[k].any() for k in factors if "lora_B" in k)  # the model stayed
    assert _rounds(folder)[1]["client_dp_epsilon"] > 0


# -- the checks on sums of real clients' vectors ------------------------------------------------

ENTRIES, COUNT, RANGE, BITS = 300, 5, 8.0, 22
CONFIG = ConfigRecord(
    {
        p.CLIP_NORM: 0.0,
        p.CLIPPING_RANGE: RANGE,
        p.BITS: BITS,
        p.MAX_WEIGHT: 100.0,
        p.COUNT_BIT: False,
        p.POOL_SIZE: 0,
    }
)
RUN = parse_run_config({"secagg.enabled": True})
STATS = metric_sums.statistics(keys.UNNOISED_TRAIN_METRICS + (keys.TRAIN_STEPS,))
SHAPE = p.VectorLayout([("w", (ENTRIES,))], False, STATS)
BOUNDS = UpdateBounds({"w": 0.05}, 0.5, weight_exact=False)


def _honest_sum(rng: np.random.Generator, move: float = 0.05) -> np.ndarray:
    """The integer sum of COUNT clients' vectors, each update within ``move`` a weight."""
    total = np.zeros(SHAPE.size, dtype=np.int64)
    for _ in range(COUNT):
        update = torch.from_numpy(rng.uniform(-move, move, ENTRIES) * 0.5)
        metrics = MetricRecord(
            {
                keys.NUM_EXAMPLES: float(rng.integers(10, 200)),
                keys.TRAIN_LOSS: 2.5,
                keys.TRAIN_STEPS: 5.0,
                keys.TRAIN_SECONDS: 3.0,
                keys.PEAK_MEMORY_MB: 900.0,
            }
        )
        vector, bit = p.update_vector({"w": torch.zeros(ENTRIES)}, {"w": update}, metrics, CONFIG)
        entries = metric_sums.encode_metrics(metrics, vector[0], STATS)
        total = (total + p.quantized_vector(vector, bit, CONFIG, entries)) % MOD
    return total


def _problem(total: np.ndarray) -> str | None:
    s = RUN.secagg
    parts = p.split_sum(total, SHAPE, s.clipping_range, s.quantization_bits, COUNT)
    return masked_sum_problem(total, parts, SHAPE, COUNT, RUN, BOUNDS)


def test_honest_sums_pass() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert _problem(_honest_sum(rng)) is None


@pytest.mark.parametrize(
    ("where", "added", "named"),
    [
        ("weight", 2**31, "its weights sum to"),
        ("weight", COUNT * 10**6, "its weights sum to"),
        ("entry", 2**31, "an entry sums to"),
        ("all", 2**31, "its weights sum to"),
        ("statistic", 2**31, "a statistic sums to"),
        ("move", 0, "moves a weight by"),
        ("norm", 0, "its update has L2 norm"),
    ],
)
def test_a_tampered_sum_is_named(where: str, added: int, named: str) -> None:
    rng = np.random.default_rng(1)
    total = _honest_sum(rng)
    top = (1 << BITS) - 1
    if where == "weight":
        total[0] += added
    elif where == "entry":
        total[7] += added
    elif where == "all":
        total += added
    elif where == "statistic":
        total[-1] += added
    elif where == "move":  # one entry pushed to the range's edge: far past AdamW's move
        total[3] = COUNT * top
    else:  # every entry within AdamW's move for the clients' weight, but all of them at once
        centre, step = COUNT * top // 2, 2 * RANGE / top
        total[1 : 1 + ENTRIES] = centre + int(0.15 / step)  # 0.15 a weight, 2.6 in L2
    assert named in (_problem(total % MOD) or "")
