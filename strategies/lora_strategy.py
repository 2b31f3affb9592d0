"""The Flower side shared by every LoRA strategy: records in, tensors to the math, records out.

Sampling, message construction and metric averaging are Flower's own ``FedAvg``; a subclass only
supplies ``aggregate``, a function of tensors that knows nothing of messages.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from logging import INFO
from typing import ClassVar

import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg
from flwr.supercore import log

from federated import message_keys as keys
from federated.wire import record_to_tensors, tensors_to_record


class LoraStrategy(FedAvg):
    """Base of fedtune's strategies; configured like Flower's ``FedAvg``."""

    name: ClassVar[str]

    def __init__(self, **fedavg_kwargs: object) -> None:
        super().__init__(
            weighted_by_key=keys.NUM_EXAMPLES,
            arrayrecord_key=keys.ARRAYS,
            configrecord_key=keys.CONFIG,
            **fedavg_kwargs,  # type: ignore[arg-type]
        )

    @abstractmethod
    def aggregate(
        self, updates: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
    ) -> dict[str, torch.Tensor]:
        """Combine the clients' tensors into the next global tensors."""

    def summary(self) -> None:
        log(INFO, "\t├──> Aggregation: %s", self.name)
        super().summary()

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [msg.content for msg in valid]
        updates = [record_to_tensors(content.array_records[keys.ARRAYS]) for content in contents]
        weights = [
            float(content.metric_records[keys.METRICS][keys.NUM_EXAMPLES]) for content in contents
        ]
        arrays = tensors_to_record(self.aggregate(updates, weights))
        return arrays, self.train_metrics_aggr_fn(contents, self.weighted_by_key)
