"""The size of a record-level DP client's data, released once a run through a Gaussian mechanism.

Under add/remove adjacency the number of records is itself private: its exact value changes with
the one record the guarantee protects. So a client releases it once, noised, and takes
everything else that needs a size from that noised value: its Poisson sampling rate
(batch size / count), the expected batch its noised gradient sum is divided by, and the weight
the server averages it with. Those are post-processing of an accounted release, and the count's
own event (sensitivity 1, noise std ``count_noise``, no sampling) is the first in its ledger.
"""

from __future__ import annotations

import torch

from federated.privacy.accounting import PrivacyLedger
from federated.privacy.secret_randomness import gaussian_noise

# A noised count further than this many standard deviations from the truth has probability
# below 1e-9.
COUNT_NOISE_SIGMAS = 6.0


def noised_count(num_records: int, count_noise: float, generator: torch.Generator) -> int:
    """The count plus N(0, count_noise²), rounded, at least 1 (rounding is post-processing)."""
    noise = float(gaussian_noise((), count_noise, generator))
    return max(1, round(num_records + noise))


def count_release(count_noise: float) -> PrivacyLedger:
    """A ledger holding the count's release alone: what every private client spends first."""
    ledger = PrivacyLedger()
    ledger.spend(count_noise, 1.0, 1)
    return ledger
