"""The privacy-audit section: canaries in the clients' data, tested on the final model."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class AuditSettings:
    canaries: int = option(
        0,
        "Canaries for one-run privacy auditing (0: none): random secret records, each inserted "
        "with probability 1/2 into one client's training data; after the last round the server "
        "guesses which were inserted from the final model's loss on them and writes the "
        "empirical lower bound on epsilon beside the accountant's (audit.json). At most 10,000: "
        "every client and the server build each one.",
        minimum=0,
        maximum=10_000,
    )
