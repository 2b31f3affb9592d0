"""A record-level DP client's round: the round's mechanism, its ledger, its budget.

The guarantee is (epsilon, delta)-DP for adding or removing one training record of a client,
over everything the client sends in the run: its noised record count (once), then every round's
noised update. The ledger lives in the node state and on disk (``client.privacy_state``). A
round is only trained when the epsilon after it stays within ``dp.target-epsilon``; otherwise the
client answers with what it has spent and trains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from flwr.app import Context, Message, RecordDict

from client.node import contracted
from client.privacy_state import PrivacyState, PrivacyStore
from federated import message_keys as keys
from federated.config import RunConfig
from federated.privacy.accounting import noise_for_budget
from federated.privacy.record_count import count_release, noised_count
from federated.privacy.secret_randomness import secret_generator
from federated.reply_contract import DECLINED_METRIC_KEYS


@dataclass(frozen=True)
class RoundPrivacy:
    """The Gaussian mechanism of one client's round: noise, sampling rate, steps, and budget."""

    noise_multiplier: float
    sample_rate: float
    expected_batch: float  # what the noised sum is divided by: rate × noised count
    steps: int
    delta: float
    budget: float  # 0: no budget

    @classmethod
    def of(cls, config: RunConfig, count: int) -> RoundPrivacy:
        """From the run config and the client's noised record count: q = batch size / count."""
        dp = config.dp
        rate = min(1.0, config.train.batch_size / count)
        steps = config.train.local_steps
        noise = dp.noise_multiplier or _noise(
            dp.target_epsilon, dp.delta, rate, steps * config.num_server_rounds, dp.count_noise
        )
        return cls(noise, rate, rate * count, steps, dp.delta, dp.target_epsilon)


@lru_cache(maxsize=64)
def _noise(
    target_epsilon: float, delta: float, rate: float, steps: int, count_noise: float
) -> float:
    # A client sampled every round takes all these steps after its count: the noise is set for
    # that worst case.
    return noise_for_budget(target_epsilon, delta, rate, steps, count_release(count_noise))


class PrivateClient:
    """A record-level DP client in one round: its state, the round's mechanism, its replies."""

    def __init__(
        self, context: Context, config: RunConfig, key: str, partition: tuple[int, int],
        num_records: int,
    ) -> None:  # fmt: skip
        self.store = PrivacyStore(context, key, partition)
        partition_id = partition[0]
        self.state: PrivacyState = self.store.load()
        self.partition_id = partition_id
        if self.state.noised_count is None:
            generator = secret_generator("record-count", partition_id)
            self.state.noised_count = noised_count(num_records, config.dp.count_noise, generator)
            self.state.ledger.spend(config.dp.count_noise, 1.0, 1)
            self.store.save(self.state)  # spent before anything holding it leaves the node
        self.count: int = self.state.noised_count
        self.round = RoundPrivacy.of(config, self.count)

    def spent(self) -> float:
        return self.state.ledger.epsilon(self.round.delta)

    def over_budget(self) -> float | None:
        """The epsilon the round would reach, when that is past the budget; else None."""
        r = self.round
        if not r.budget:
            return None
        after = self.state.ledger.epsilon_after(r.noise_multiplier, r.sample_rate, r.steps, r.delta)
        return after if after > r.budget else None

    def spend(self) -> float:
        """Account the round's steps, on disk first; return the epsilon spent so far."""
        r = self.round
        self.state.ledger.spend(r.noise_multiplier, r.sample_rate, r.steps)
        self.store.save(self.state)
        return self.spent()

    def declined(self, msg: Message, epsilon_next: float) -> Message:
        """The reply of a client whose budget this round would overspend: metrics, no update."""
        values = {
            keys.NUM_EXAMPLES: self.count,
            keys.PARTITION_ID: self.partition_id,
            keys.DP_DECLINED: 1,
            keys.DP_EPSILON: self.spent(),
            keys.DP_EPSILON_NEXT: epsilon_next,
        }
        metrics = contracted(values, DECLINED_METRIC_KEYS)
        return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)
