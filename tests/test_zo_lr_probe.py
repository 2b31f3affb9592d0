"""zo.lr = 0 (auto): the probe finds the edge of stability of a case whose edge is known, leaves
the real model at w0 bit for bit, gives the same rate twice; clients take the rate the server
sends; a resumed run takes its checkpoint's rate."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ConfigRecord, RecordDict

from client.zo_round import _with_rate
from federated.config import ConfigError, parse_run_config
from federated.protocol import message_keys as keys
from federated.zo.factor_steps import AUTO_FACTOR_LR, factor_lr
from federated.zo.hybrid import hybrid_state
from federated.zo.lr_probe import BELOW_EDGE, ProbeError, probe_lr
from federated.zo.targets import snapshot
from federated.zo.workspace import forget_zo_model, zo_model
from server.zo_rate import resolve_zo_lr, zo_lr_probe
from tests.messages import message

AUTO = {
    "mode": "zo",
    "strategy.name": "fedkseed",
    "model.name": "tiny-bert",
    "data.name": "wordnet",
    "data.num-classes": 3,
    "data.max-per-class": 30,
    "zo.pool-size": 32,
    "zo.params": "lora",
    "zo.hybrid": "head",
    "zo.hybrid-lr": 0.1,
    "zo.calibration-examples": 16,
    "train.batch-size": 4,
    "zo.eps": 1e-2,
}


class _Quadratic:
    """f(w) = c·(w − 1)², descended by exact gradient steps: stable iff lr < 1/c."""

    def __init__(self, c: float) -> None:
        self.c, self.w, self.resets = c, 0.0, 0

    def train_chunk(self, lr: float, steps: int, chunk: int) -> None:
        for _ in range(steps):
            self.w -= lr * 2 * self.c * (self.w - 1.0)

    def loss(self) -> float:
        return self.c * (self.w - 1.0) ** 2

    def reset(self) -> None:
        self.w, self.resets = 0.0, self.resets + 1


def test_the_rate_is_ten_times_below_the_largest_that_held() -> None:
    case = _Quadratic(50.0)  # stable below 0.02: 3.16e-2 grows, 1e-2 holds
    result = probe_lr(case.train_chunk, case.loss, case.reset)
    assert result.edge == pytest.approx(1e-2)
    assert result.lr == pytest.approx(1e-2 / BELOW_EDGE)
    assert [t.held for t in result.trials] == [False, False, True]
    # A failed trial stops at the check it failed (an explosion at the first, after one step;
    # a slower rise later); every trial starts from w0.
    assert [len(t.losses) for t in result.trials] == [2, 2, 10]
    assert case.resets == 1 + len(result.trials)
    with_momentum = probe_lr(case.train_chunk, case.loss, case.reset, momentum=0.9)
    assert with_momentum.lr == pytest.approx(0.1 * result.lr)


def test_the_first_step_may_wobble_but_a_later_rise_fails() -> None:
    # The loss after each check, per candidate: the first rises 3% by its third check, the
    # second wobbles up by half after its first step and recovers.
    paths = {0.2: [1.0, 1.0, 1.03], 0.1: [1.5, 0.99, 0.98, 0.97, 0.96, 0.95, 0.94, 0.93, 0.92]}
    state: dict = {}

    def train_chunk(lr: float, steps: int, chunk: int) -> None:
        state["loss"] = paths[lr][chunk]

    result = probe_lr(
        train_chunk, lambda: state["loss"], lambda: state.update(loss=1.0), candidates=(0.2, 0.1)
    )
    assert result.edge == 0.1
    assert [t.losses for t in result.trials] == [[1.0, 1.0, 1.0, 1.03], [1.0, *paths[0.1]]]


def test_a_loss_that_rises_at_every_rate_or_starts_unfinite_is_an_error() -> None:
    def rising(lr: float, steps: int, chunk: int) -> None:
        state["loss"] += 1.0

    state = {"loss": 1.0}
    with pytest.raises(ProbeError, match="rose above"):
        probe_lr(rising, lambda: state["loss"], lambda: state.update(loss=1.0))
    with pytest.raises(ProbeError, match="at w0 is nan"):
        probe_lr(rising, lambda: math.nan, lambda: None)


def test_the_probe_leaves_the_model_at_w0_and_gives_the_same_rate_twice() -> None:
    forget_zo_model()
    config = parse_run_config(AUTO)
    zo = zo_model(config)
    targets, head = snapshot(zo.targets), hybrid_state(zo.hybrid)
    first, second = zo_lr_probe(config), zo_lr_probe(config)
    assert first.lr == second.lr > 0
    assert [t.losses for t in first.trials] == [t.losses for t in second.trials]
    for target, value in zip(zo.targets, targets, strict=True):
        assert torch.equal(target.tensor, value)
    for key, value in hybrid_state(zo.hybrid).items():
        assert torch.equal(value, head[key])
    # The rate resolved, the same model replays at it: nothing was loaded again.
    assert zo_model(config.with_zo_lr(first.lr)) is zo and zo.lr == first.lr


def test_a_model_that_replayed_seeds_at_another_rate_reloads_w0() -> None:
    forget_zo_model()
    config = parse_run_config({**AUTO, "zo.lr": 1e-3})
    zo = zo_model(config)
    start = snapshot(zo.targets)
    zo.load(torch.ones(len(zo.pool)))
    again = zo_model(config.with_zo_lr(2e-3))
    assert again is not zo and again.lr == 2e-3
    for target, value in zip(again.targets, start, strict=True):
        assert torch.equal(target.tensor, value)


def _train_message(rate: float | None) -> RecordDict:
    config = {keys.SERVER_ROUND: 1, **({keys.ZO_LR: rate} if rate is not None else {})}
    return message(RecordDict({keys.CONFIG: ConfigRecord(config)}))


def test_a_client_takes_the_rate_the_server_sent_and_refuses_none() -> None:
    auto = parse_run_config(AUTO)
    assert _with_rate(auto, _train_message(3e-4)).zo.lr == 3e-4
    with pytest.raises(ValueError, match="sent no zeroth-order rate"):
        _with_rate(auto, _train_message(None))
    own = parse_run_config({**AUTO, "zo.lr": 1e-3})
    assert _with_rate(own, _train_message(3e-4)).zo.lr == 1e-3


def test_a_resumed_run_takes_its_checkpoints_rate_and_lora_runs_a_fixed_factor_rate() -> None:
    auto = parse_run_config(AUTO)
    assert resolve_zo_lr(auto, None, {"zo.lr": 2.5e-4}).zo.lr == 2.5e-4
    lora = parse_run_config(
        {**AUTO, "mode": "lora", "strategy.name": "fedavg", "zo.hybrid": "", "zo.params": "full"}
    )
    assert resolve_zo_lr(lora, None) is lora
    assert factor_lr(lora) == AUTO_FACTOR_LR
    assert factor_lr(lora.with_zo_lr(1e-3)) == 1e-3


def test_too_few_calibration_examples_are_refused_with_the_key() -> None:
    forget_zo_model()
    config = parse_run_config({**AUTO, "zo.calibration-examples": 1})
    with pytest.raises(ConfigError, match="zo.lr"):
        zo_lr_probe(config)
