"""The zeroth-order learning rate a run takes when it names none (``zo.lr = 0``).

A ZO step moves the weights by lr·g·z, with ‖z‖² about the number of trained entries, so the
rate that works spans six orders of magnitude across models and parameter sets (1e-5 for all of
SmolLM2's weights by low-rank seeds, 3e-3 for MiniLM's LoRA factors), and a rate one notch too
large first lowers the loss, then blows it up once the random part of the steps has added up.
A rule from the model's size alone cannot know the gradient's noise and curvature; a short
trial on the data can.

From the largest candidate down, by factors of √10, the probe takes 40 plain ZO steps from w0
on calibration examples, checking the loss on other calibration examples after 1 step and then
every 5. A candidate fails as soon as that loss is not finite, has doubled after the first step
(a rate far too large shows at once, so failing costs little; a good one may still wobble), or
rises above the start by more than ``tolerance`` of it at a later check. The first candidate
that completes its steps is the edge; the rate is two notches (10x) below
it, since a run takes many more steps than the trial and a rate near the edge of a short trial
diverges later. On MiniLM the edges of 40 steps were 3e-2 (LoRA factors) and 3e-3 (all
weights, low-rank), and ``benchmarks/zo/lr_sweep.py`` saw 1e-2 and 1e-3 blow up after 120-200
steps while 3e-3 and 3e-4 held; on SmolLM2 the edges were 1e-3 (factors) and 3e-5 (low-rank),
where 3e-4 and 1e-5 held. Heavy-ball momentum multiplies the long-run step by 1/(1-β), so the
rate is scaled by (1-β).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

CANDIDATES = tuple(10 ** (-k / 2) for k in range(2, 17))  # 1e-1 down to 1e-8, √10 apart
CHECKS = (1, 5, 10, 15, 20, 25, 30, 35, 40)  # steps taken when the loss is checked
TOLERANCE = 0.02
FIRST_TOLERANCE = 1.0  # after the first check's single step: only an explosion fails
BELOW_EDGE = 10.0


@dataclass(frozen=True)
class Trial:
    lr: float
    losses: list[float]  # the calibration loss at the start and after each check
    held: bool


@dataclass(frozen=True)
class ProbeResult:
    lr: float
    edge: float
    trials: list[Trial] = field(default_factory=list)


class ProbeError(ValueError):
    """No candidate rate held: the loss rose even at the smallest."""


def probe_lr(
    train_chunk: Callable[[float, int, int], None],
    calibration_loss: Callable[[], float],
    reset: Callable[[], None],
    *,
    momentum: float = 0.0,
    checks: Sequence[int] = CHECKS,
    tolerance: float = TOLERANCE,
    candidates: Sequence[float] = CANDIDATES,
) -> ProbeResult:
    """The rate ``BELOW_EDGE`` times below the largest candidate that held up to the last of
    ``checks``.

    ``train_chunk(lr, n, chunk)`` takes ``n`` plain ZO steps at ``lr`` from wherever the model
    is (``chunk`` numbers the call, for its batches and seeds); ``calibration_loss()`` is the
    loss on the held-out calibration examples; ``reset()`` puts the model back at w0.
    """
    reset()
    start = calibration_loss()
    if not math.isfinite(start):
        raise ProbeError(f"the calibration loss at w0 is {start}")
    limit = start + tolerance * abs(start)
    trials = []
    for lr in candidates:
        losses, held, done = [start], True, 0
        for chunk, check in enumerate(checks):
            train_chunk(lr, check - done, chunk)
            done = check
            losses.append(calibration_loss())
            bound = start + FIRST_TOLERANCE * abs(start) if chunk == 0 else limit
            if not math.isfinite(losses[-1]) or losses[-1] > bound:
                held = False
                break
        reset()
        trials.append(Trial(lr, losses, held))
        if held:
            return ProbeResult(lr=lr / BELOW_EDGE * (1.0 - momentum), edge=lr, trials=trials)
    raise ProbeError(
        f"the calibration loss rose above {limit:.4g} within {checks[-1]} steps at every rate "
        f"from {candidates[0]:.0e} down to {candidates[-1]:.0e}"
    )
