"""What an honest client can send: AdamW's furthest move against real AdamW runs, the examples a
partition can claim, replays refused, non-finite numbers kept out of the records."""

from __future__ import annotations

import json
import math

import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from federated.config import parse_run_config
from federated.model.lora import lora_pairs
from federated.model.workspace import client_indices
from federated.privacy.canaries import client_canaries
from federated.protocol import message_keys as keys
from federated.protocol.optimizer_bound import ADAMW_BETAS, adam_step_factor, adamw_max_move
from federated.protocol.round_plan import RoundPlan
from federated.protocol.wire import tensors_to_record
from federated.results import RunResults
from server.replay_guard import ReplayGuard, update_digest
from server.update_bounds import example_bound, move_bound
from tests.test_reply_validation import _reply

GRADIENTS = {
    "constant": lambda t, g: torch.ones(64),
    "random": lambda t, g: torch.randn(64, generator=g) * 10 ** torch.randn(64, generator=g),
    "alternating": lambda t, g: torch.full((64,), (-1.0) ** t),
    "spike then silence": lambda t, g: torch.full((64,), 1e6 if t == 0 else 1e-12),
    "growing": lambda t, g: torch.full((64,), 1.12**t),
    "silence then spike": lambda t, g: torch.full((64,), 1e-9 if t < 7 else 1e3),
}


@pytest.mark.parametrize("kind", sorted(GRADIENTS))
@pytest.mark.parametrize(("steps", "weight_decay"), [(1, 0.0), (8, 0.0), (30, 0.01)])
def test_no_gradient_sequence_moves_adamw_further_than_the_bound(kind, steps, weight_decay):
    g = torch.Generator().manual_seed(steps)
    start = torch.randn(64, generator=g)
    weight = torch.nn.Parameter(start.clone())
    lr = 3e-3
    optimizer = torch.optim.AdamW([weight], lr=lr, weight_decay=weight_decay, betas=ADAMW_BETAS)
    for t in range(steps):
        weight.grad = GRADIENTS[kind](t, g).clone()
        optimizer.step()
    moved = float((weight.detach() - start).abs().max())
    bound = adamw_max_move(lr, steps, weight_decay, float(start.abs().max()))
    assert moved <= bound * (1 + 1e-5)


def test_the_step_factor_is_one_at_first_and_bounded_later() -> None:
    assert adam_step_factor(1) == pytest.approx(1.0)
    factors = [adam_step_factor(t) for t in range(1, 2000)]
    assert all(1.0 <= f < 7.5 for f in factors)
    limit = 0.1 / math.sqrt(0.001) / math.sqrt(1 - 0.81 / 0.999)  # about 7.27
    assert adam_step_factor(50_000) == pytest.approx(limit)


TINY = {"model.name": "tiny-llama", "lora.rank": 4, "train.local-steps": 5, "train.lr": 0.01}


def _reference(config) -> dict[str, torch.Tensor]:
    from federated.model.workspace import lora_model

    return dict(lora_model(config).initial)


def test_the_move_bound_exempts_tensors_that_do_not_start_from_what_was_sent() -> None:
    config = parse_run_config(TINY)
    reference = _reference(config)
    pairs = lora_pairs(reference)[0]
    plain = move_bound(config, 1, RoundPlan(), pairs, reference)
    assert plain.exempt == frozenset()
    assert plain.per_weight == pytest.approx(adamw_max_move(0.01, 5, 0.0, 0.0), rel=0.01)
    personal = move_bound(config, 1, RoundPlan(keep_b=True), pairs, reference)
    assert personal.exempt == {p.b_key for p in pairs}
    fresh = move_bound(config, 1, RoundPlan(fresh_factors=True), pairs, reference)
    assert fresh.exempt == {k for p in pairs for k in (p.a_key, p.b_key)}
    assert "moved a weight by 50" in plain.problem(pairs[0].a_key, 50.0)
    assert plain.problem(pairs[0].a_key, plain.per_weight) is None
    epochs = parse_run_config({**TINY, "train.local-steps": 0, "train.local-epochs": 1.0})
    assert move_bound(epochs, 1, RoundPlan(), pairs, reference) is None


def test_a_partition_claims_at_most_its_records() -> None:
    raw = {
        "model.name": "tiny-bert",
        "data.name": "wordnet",
        "data.num-classes": 3,
        "data.max-per-class": 40,
        "data.partitioner": "iid",
    }
    config = parse_run_config(raw)
    sizes = [len(client_indices(config, p, 3)[0]) for p in range(3)]
    bound = example_bound(config, 3)
    assert bound.problem(1, sizes[1]) is None
    assert f"partition 1 holds {sizes[1]}" in bound.problem(1, sizes[1] + 1)
    assert "not one of 0..2" in bound.problem(3, 1)
    assert "not one of 0..2" in bound.problem(0.5, 1)
    private = example_bound(
        parse_run_config({**raw, "dp.mode": "record", "dp.noise-multiplier": 1.0}), 3
    )
    assert private.problem(1, sizes[1] + 6 * 20) is None  # the count noise's room
    assert private.problem(1, sizes[1] + 6 * 20 + 1) is not None
    capped = example_bound(parse_run_config({**raw, "server.max-examples": 10}), 3)
    assert "server.max-examples allows 10" in capped.problem(0, 11)


def test_a_partition_may_claim_the_audits_canaries_it_trains_on() -> None:
    raw = {
        "model.name": "tiny-bert",
        "data.name": "wordnet",
        "data.num-classes": 3,
        "data.max-per-class": 40,
        "data.partitioner": "iid",
        "audit.canaries": 30,
    }
    config = parse_run_config(raw)
    bound = example_bound(config, 3)
    for p in range(3):
        trains_on = len(client_indices(config, p, 3)[0]) + len(client_canaries(config, p, 3, 3))
        assert trains_on > len(client_indices(config, p, 3)[0])
        assert bound.problem(p, trains_on) is None
        assert bound.problem(p, trains_on + 1) is not None


def test_an_update_accepted_once_is_refused_again() -> None:
    def reply(value: float):
        content = RecordDict(
            {
                keys.ARRAYS: tensors_to_record({"w": torch.full((3,), value)}),
                keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1}),
            }
        )
        return _reply(content)

    guard = ReplayGuard()
    guard.remember(update_digest(reply(1.0)), server_round=2)
    assert guard.problem(update_digest(reply(1.0))) == (
        "replays an update the server accepted in round 2"
    )
    assert guard.problem(update_digest(reply(1.0 + 1e-7))) is None
    renamed = RecordDict(
        {
            keys.ARRAYS: ArrayRecord({"v": torch.full((3,), 1.0)}),
            keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 1}),
        }
    )
    assert guard.problem(update_digest(_reply(renamed))) is None


def test_non_finite_numbers_never_reach_the_records(tmp_path) -> None:
    results = RunResults.create(tmp_path / "run")
    results.append_round({"round": 1, "loss": float("nan"), "clients": [{"x": float("inf")}]})
    results.write_summary({"final": {"test_loss": float("-inf")}})
    line = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert json.loads(line) == {"round": 1, "loss": None, "clients": [{"x": None}]}
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["final"]["test_loss"] is None
