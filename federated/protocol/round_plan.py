"""What a strategy asks of a client in a round, beyond the tensors it sends.

The plan travels in the round's ConfigRecord, so a client needs to know mechanisms, never the
names of strategies: which factors it trains, which it keeps, which it sends back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from flwr.app import ConfigRecord

from federated.model.lora import LoraPair

_PREFIX = "plan."


@dataclass(frozen=True)
class RoundPlan:
    """The client's part in one round.

    Attributes
    ----------
    train_a
        False keeps every A at the shared seeded initialisation (ffa-lora).
    keep_b
        True keeps each client's own B between rounds, in its node state (fedsa-lora).
    fresh_factors
        True starts the round from freshly initialised factors (new random A, zero B) on top of
        the base weights the server's base delta gives (flora).
    upload_a, upload_b
        Which factors the reply carries; a classifier head, when there is one, always goes.
    """

    train_a: bool = True
    keep_b: bool = False
    fresh_factors: bool = False
    upload_a: bool = True
    upload_b: bool = True

    def withheld(self, pairs: Iterable[LoraPair]) -> set[str]:
        """The factor keys a reply leaves out under this plan."""
        keys: set[str] = set()
        for pair in pairs:
            if not self.upload_a:
                keys.add(pair.a_key)
            if not self.upload_b:
                keys.add(pair.b_key)
        return keys

    def to_config(self, config: ConfigRecord) -> ConfigRecord:
        for f in fields(self):
            config[_PREFIX + f.name.replace("_", "-")] = getattr(self, f.name)
        return config

    @classmethod
    def from_config(cls, config: ConfigRecord) -> RoundPlan:
        """The plan in a round's config; the defaults (train and send everything) if absent."""
        values = {}
        for f in fields(cls):
            key = _PREFIX + f.name.replace("_", "-")
            if key in config:
                values[f.name] = bool(config[key])
        return cls(**values)
