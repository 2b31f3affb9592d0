"""A data source's lifetime privacy ledger, and the ceilings its device sets on it.

Every run that trains on one data source (``client.data_source``) spends from this one ledger:
its record-count release and every round's steps are RDP events, and the source's lifetime
epsilon is the accountant's composition of all of them, whatever run keys the servers sent. The
device's own ceilings (``--node-config``) cap a run's spend and the lifetime spend, at a delta
the device chooses: the run config comes from whoever submits the run, so nothing in it can
loosen them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from federated.privacy.accounting import PrivacyLedger

PER_RUN_KEY = "max-epsilon-per-run"
TOTAL_KEY = "max-epsilon-total"
DELTA_KEY = "ledger-delta"
DEFAULT_DELTA = 1e-5
_VERSION = 1

Event = tuple[float, float, int]  # (noise multiplier, sample rate, steps), as opacus keeps them


@dataclass(frozen=True)
class DeviceCeilings:
    """The most epsilon, at ``delta``, that the device lets one run and all runs spend on one
    data source (None: no ceiling)."""

    per_run: float | None = None
    total: float | None = None
    delta: float = DEFAULT_DELTA

    def refusal(self, run: PrivacyLedger, lifetime: PrivacyLedger, *events: Event) -> str | None:
        """Why spending ``events`` more, after ``run`` in this run and ``lifetime`` on the data
        source, would pass a ceiling; None when it would not."""
        for ceiling, key, spent, what in (
            (self.per_run, PER_RUN_KEY, run, "this run's spend"),
            (self.total, TOTAL_KEY, lifetime, "this data source's lifetime spend"),
        ):
            if ceiling is None:
                continue
            after = PrivacyLedger([*spent.events, *events]).epsilon(self.delta)
            if after > ceiling:
                return (
                    f"node config '{key}' = {ceiling:g}: this round would take {what} to "
                    f"epsilon {after:.3g} at delta {self.delta:g}"
                )
        return None

    def to_json(self) -> dict:
        return {PER_RUN_KEY: self.per_run, TOTAL_KEY: self.total, DELTA_KEY: self.delta}


@dataclass
class RunSpend:
    """What one run has released from a data source: its noised record count, its events."""

    noised_count: int
    ledger: PrivacyLedger = field(default_factory=PrivacyLedger)
    rounds: int = 0  # rounds trained; declined ones are not counted

    def to_json(self) -> dict:
        return {
            "noised-count": self.noised_count,
            "events": [list(event) for event in self.ledger.events],
            "rounds": self.rounds,
        }

    @classmethod
    def from_json(cls, data: dict) -> RunSpend:
        events = [(float(n), float(q), int(s)) for n, q, s in data["events"]]
        return cls(int(data["noised-count"]), PrivacyLedger(events), int(data["rounds"]))


@dataclass
class LifetimeLedger:
    """Every run on one data source, by run key, with the device's ceilings at the last write."""

    source: str
    label: str
    ceilings: DeviceCeilings = field(default_factory=DeviceCeilings)
    runs: dict[str, RunSpend] = field(default_factory=dict)

    def lifetime(self) -> PrivacyLedger:
        """The composition of every run's events (RDP adds up, whatever their order)."""
        return PrivacyLedger([event for run in self.runs.values() for event in run.ledger.events])

    def epsilon(self) -> float:
        return self.lifetime().epsilon(self.ceilings.delta)

    def to_json(self) -> dict:
        return {
            "version": _VERSION,
            "source": self.source,
            "label": self.label,
            "ceilings": self.ceilings.to_json(),
            "runs": {key: run.to_json() for key, run in self.runs.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> LifetimeLedger:
        if data.get("version") != _VERSION:
            raise ValueError(f"unknown version {data.get('version')!r}")
        limits = data["ceilings"]
        ceilings = DeviceCeilings(limits[PER_RUN_KEY], limits[TOTAL_KEY], float(limits[DELTA_KEY]))
        runs = {str(key): RunSpend.from_json(run) for key, run in data["runs"].items()}
        return cls(str(data["source"]), str(data["label"]), ceilings, runs)
