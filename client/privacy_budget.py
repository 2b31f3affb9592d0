"""A record-level DP client's round: the round's mechanism, its data source's ledger, its limits.

The guarantee is (epsilon, delta)-DP for adding or removing one training record of a client,
over everything the client sends in the run: its noised record count (once), then every round's
noised update. Every run on the same data spends from one lifetime ledger, kept on disk
(``client.privacy_state``). A round is only trained when the epsilon after it stays within the
run's ``dp.target-epsilon`` and the device's own ceilings
(``federated.privacy.lifetime_ledger``), which no run config can loosen; otherwise the client
answers with what it has spent and trains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from logging import WARNING

from flwr.app import Context, Message, RecordDict
from flwr.common import log

from client.data_source import data_source
from client.node import contracted
from client.node_config import NodeSettings
from client.privacy_state import PrivacyStore
from federated.config import RunConfig
from federated.privacy.lifetime_ledger import Event, LifetimeLedger, RunSpend
from federated.privacy.planned_epsilon import round_mechanism
from federated.privacy.record_count import count_release, noised_count
from federated.privacy.secret_randomness import secret_generator
from federated.protocol import message_keys as keys
from federated.protocol.reply_contract import DECLINED_METRIC_KEYS


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
        noise, rate = round_mechanism(config, count)
        steps, dp = config.train.local_steps, config.dp
        return cls(noise, rate, rate * count, steps, dp.delta, dp.target_epsilon)


class BudgetRefused(RuntimeError):
    """A run's first round past a limit: refused with an error, since a declined reply would
    release the run's noised count."""


class PrivateClient:
    """A record-level DP client in one round, admitted as it is made: the round's steps are
    accounted in its data source's ledger, on disk, before it trains; or, where they would pass
    a limit (the run's ``dp.target-epsilon``, the device's ceilings), the round is declined
    (``declined_at``). A run's first round past a limit raises `BudgetRefused` instead, having
    released nothing."""

    def __init__(
        self, context: Context, config: RunConfig, key: str, node: NodeSettings, num_records: int
    ) -> None:
        self.partition_id, self.ceilings, dp = node.partition_id, node.ceilings, config.dp
        store = PrivacyStore(context, data_source(config, node), node.ceilings)
        with store.update() as ledger:
            run = ledger.runs.get(key)
            new = run is None
            if run is None:
                generator = secret_generator("record-count", self.partition_id)
                count = noised_count(num_records, dp.record.count_noise, generator)
                run = ledger.runs[key] = RunSpend(count, count_release(dp.record.count_noise))
            self.run, self.round = run, RoundPrivacy.of(config, run.noised_count)
            step = (self.round.noise_multiplier, self.round.sample_rate, self.round.steps)
            reason = self._limit(ledger, step)
            if reason is not None and new:
                raise BudgetRefused(f"record-level DP: {reason}; this run trains nothing")
            # The epsilon the run would reach, when the round is declined; None: it trains.
            self.declined_at: float | None = None
            if reason is not None:
                log(WARNING, "record-level DP: this round is declined: %s", reason)
                self.declined_at = run.ledger.epsilon_after(*step, self.round.delta)
            else:
                run.ledger.spend(*step)
                run.rounds += 1

    @property
    def count(self) -> int:
        return self.run.noised_count

    def spent(self) -> float:
        """Epsilon this run has spent at its own delta (what its replies state)."""
        return self.run.ledger.epsilon(self.round.delta)

    def _limit(self, ledger: LifetimeLedger, step: Event) -> str | None:
        """Why ``step`` after what is spent would pass a limit, or None."""
        budget, delta = self.round.budget, self.round.delta
        if budget and (after := self.run.ledger.epsilon_after(*step, delta)) > budget:
            return (
                f"run config 'dp.target-epsilon' = {budget:g}: this round would take this "
                f"run to epsilon {after:.3g} at delta {delta:g}"
            )
        return self.ceilings.refusal(self.run.ledger, ledger.lifetime(), step)

    def declined(self, msg: Message) -> Message:
        """The reply of a client whose limit this round would pass: metrics, no update."""
        assert self.declined_at is not None
        values = {
            keys.NUM_EXAMPLES: self.count,
            keys.PARTITION_ID: self.partition_id,
            keys.DP_DECLINED: 1,
            keys.DP_EPSILON: self.spent(),
            keys.DP_EPSILON_NEXT: self.declined_at,
        }
        metrics = contracted(values, DECLINED_METRIC_KEYS)
        return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)
