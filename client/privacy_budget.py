"""A client's record-level privacy across rounds: the round's mechanism, its ledger, its budget.

The ledger lives in the node state, so it outlives the round and the process's cached models.
A round is only trained when the epsilon after it stays within ``dp.target-epsilon``; otherwise
the client answers with what it has spent and trains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from flwr.app import Message, MetricRecord, RecordDict

from federated import message_keys as keys
from federated.config import RunConfig
from federated.privacy.accounting import PrivacyLedger, noise_for_budget


@dataclass(frozen=True)
class RoundPrivacy:
    """The Gaussian mechanism of one client's round: noise, sampling rate, steps, and budget."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    budget: float  # 0: no budget

    @classmethod
    def of(cls, config: RunConfig, num_examples: int) -> RoundPrivacy:
        """From the run config and this client's data size: q = batch size / examples."""
        dp = config.dp
        rate = min(1.0, config.train.batch_size / num_examples)
        steps = config.train.local_steps
        noise = dp.noise_multiplier or _noise(
            dp.target_epsilon, dp.delta, rate, steps * config.num_server_rounds
        )
        return cls(noise, rate, steps, dp.delta, dp.target_epsilon)


@lru_cache(maxsize=64)
def _noise(target_epsilon: float, delta: float, rate: float, steps: int) -> float:
    # A client sampled every round takes all these steps: the noise is set for that worst case.
    return noise_for_budget(target_epsilon, delta, rate, steps)


def ledger_of(state: RecordDict) -> PrivacyLedger:
    """The privacy this node has spent in earlier rounds (none before its first)."""
    return PrivacyLedger.from_record(state.config_records.get(keys.DP_LEDGER))


def spend(state: RecordDict, ledger: PrivacyLedger, privacy: RoundPrivacy) -> float:
    """Record the round's steps in the node state; return the epsilon spent so far."""
    ledger.spend(privacy.noise_multiplier, privacy.sample_rate, privacy.steps)
    state[keys.DP_LEDGER] = ledger.to_record()
    return ledger.epsilon(privacy.delta)


def over_budget(ledger: PrivacyLedger, privacy: RoundPrivacy) -> float | None:
    """The epsilon the round would reach, when that is past the budget; else None."""
    if not privacy.budget:
        return None
    after = ledger.epsilon_after(
        privacy.noise_multiplier, privacy.sample_rate, privacy.steps, privacy.delta
    )
    return after if after > privacy.budget else None


def declined(
    msg: Message, ledger: PrivacyLedger, privacy: RoundPrivacy, epsilon_next: float,
    partition_id: int, num_examples: int,
) -> Message:  # fmt: skip
    """The reply of a client whose budget this round would overspend: metrics, no update."""
    metrics = MetricRecord(
        {
            keys.NUM_EXAMPLES: num_examples,
            keys.PARTITION_ID: partition_id,
            keys.DP_DECLINED: 1,
            keys.DP_EPSILON: ledger.epsilon(privacy.delta),
            keys.DP_EPSILON_NEXT: epsilon_next,
        }
    )
    return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)
