"""Privacy spent so far, with opacus's RDP accountant, kept in a form Flower records can hold.

A ledger is the accountant's history of (noise multiplier, sample rate, steps) events: Gaussian
mechanisms, each of sensitivity 1 once its noise is counted in multiples of its sensitivity,
Poisson-subsampled at the rate (1: no sampling). Clients keep theirs in the node state and on
disk across rounds; the server keeps one for client-level DP. Budgets
are checked before spending: ``epsilon_after`` answers "what would epsilon be after these steps"
without changing the ledger.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

if TYPE_CHECKING:  # Flower is imported where a ledger is recorded (see to_record)
    from flwr.app import ConfigRecord

_NOISE, _RATE, _STEPS = "noise-multipliers", "sample-rates", "steps"
# The search for a budget's noise: opacus's own bounds and tolerance (get_noise_multiplier).
_MAX_NOISE = 1e6
_EPSILON_TOLERANCE = 0.01


class BudgetUnreachable(ValueError):
    """No noise keeps the mechanism within the budget: what is spent already exceeds it."""


@dataclass
class PrivacyLedger:
    """The Gaussian mechanism's events so far: each (noise multiplier, sample rate, steps)."""

    events: list[tuple[float, float, int]] = field(default_factory=list)

    def _accountant(self, extra: tuple[float, float, int] | None = None) -> RDPAccountant:
        accountant = RDPAccountant()
        accountant.history = [*self.events, *([extra] if extra else [])]
        return accountant

    def epsilon(self, delta: float) -> float:
        """Epsilon spent so far at ``delta`` (0 before any step)."""
        return self._accountant().get_epsilon(delta) if self.events else 0.0

    def epsilon_after(self, noise: float, sample_rate: float, steps: int, delta: float) -> float:
        """Epsilon if ``steps`` more steps were taken; the ledger does not change."""
        return self._accountant((noise, sample_rate, steps)).get_epsilon(delta)

    def epsilon_floor(self, delta: float) -> float:
        """The least epsilon any further steps can end at: the events so far, then steps whose
        noise tends to infinity. Above 0 even for an empty ledger: the accountant's largest
        order bounds how little it can certify at ``delta``."""
        orders = RDPAccountant.DEFAULT_ALPHAS
        rdp = np.zeros(len(orders))
        for noise, rate, steps in self.events:
            rdp = rdp + rdp_analysis.compute_rdp(
                q=rate, noise_multiplier=noise, steps=steps, orders=orders
            )
        with warnings.catch_warnings():  # at the floor the best order is the largest: expected
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            return float(rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0])

    def spend(self, noise: float, sample_rate: float, steps: int) -> None:
        if steps < 1:
            return
        last = self.events[-1] if self.events else None
        if last is not None and last[:2] == (noise, sample_rate):
            self.events[-1] = (noise, sample_rate, last[2] + steps)  # as opacus merges them
        else:
            self.events.append((noise, sample_rate, steps))

    def to_record(self) -> ConfigRecord:
        # Imported here: the run config's checks and the trainers use the ledger where Flower is
        # not installed (a GPU machine running benchmarks/accelerator).
        from flwr.app import ConfigRecord

        return ConfigRecord(
            {
                _NOISE: [e[0] for e in self.events],
                _RATE: [e[1] for e in self.events],
                _STEPS: [e[2] for e in self.events],
            }
        )

    @classmethod
    def from_record(cls, record: ConfigRecord | None) -> PrivacyLedger:
        if record is None:
            return cls()
        noise, rates, steps = record[_NOISE], record[_RATE], record[_STEPS]
        events = zip(noise, rates, steps, strict=True)
        return cls([(float(n), float(q), int(s)) for n, q, s in events])


def noise_for_budget(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    spent: PrivacyLedger | None = None,
) -> float:
    """The smallest noise multiplier (within opacus's tolerance of 0.01 in epsilon) that keeps
    ``spent`` followed by ``steps`` steps at ``sample_rate`` within (target_epsilon, delta).

    opacus's ``get_noise_multiplier`` searches the same way for an empty ledger; this one also
    counts what was released before (a client's noised record count).

    Raises
    ------
    BudgetUnreachable
        When even unbounded noise would end past the target.
    """
    ledger = spent or PrivacyLedger()
    floor = ledger.epsilon_floor(delta)
    if target_epsilon <= floor:
        raise BudgetUnreachable(
            f"epsilon {target_epsilon:g} is below {floor:.3g}, the least the RDP accountant "
            f"certifies at delta {delta:g}"
        )

    def epsilon(noise: float) -> float:
        with warnings.catch_warnings():  # large trial noises reach the accountant's last order
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            return ledger.epsilon_after(noise, sample_rate, steps, delta)

    low, high = 0.0, 10.0
    reached = epsilon(high)
    while reached > target_epsilon:
        low, high = high, 2 * high
        if high > _MAX_NOISE:
            raise BudgetUnreachable(
                f"epsilon {target_epsilon:g} needs a noise multiplier above {_MAX_NOISE:g}"
            )
        reached = epsilon(high)
    while target_epsilon - reached > _EPSILON_TOLERANCE:
        middle = (low + high) / 2
        at_middle = epsilon(middle)
        if at_middle < target_epsilon:
            high, reached = middle, at_middle
        else:
            low = middle
    return high
