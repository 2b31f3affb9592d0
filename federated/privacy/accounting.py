"""Privacy spent so far, with opacus's RDP accountant, kept in a form Flower records can hold.

A ledger is the accountant's history of (noise multiplier, sample rate, steps) events. Clients
keep theirs in the node state across rounds; the server keeps one for client-level DP. Budgets
are checked before spending: ``epsilon_after`` answers "what would epsilon be after these steps"
without changing the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flwr.app import ConfigRecord
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

_NOISE, _RATE, _STEPS = "noise-multipliers", "sample-rates", "steps"


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

    def spend(self, noise: float, sample_rate: float, steps: int) -> None:
        if steps < 1:
            return
        last = self.events[-1] if self.events else None
        if last is not None and last[:2] == (noise, sample_rate):
            self.events[-1] = (noise, sample_rate, last[2] + steps)  # as opacus merges them
        else:
            self.events.append((noise, sample_rate, steps))

    def to_record(self) -> ConfigRecord:
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


def noise_for_budget(target_epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest noise multiplier that keeps ``steps`` steps at ``sample_rate`` within
    (target_epsilon, delta), by opacus's search over its RDP accountant."""
    return get_noise_multiplier(
        target_epsilon=target_epsilon,
        target_delta=delta,
        sample_rate=sample_rate,
        steps=steps,
        accountant="rdp",
    )
