"""Which data partition each node holds, asked of the nodes themselves.

The server samples clients and orders their replies by partition, not by node ID: node IDs
change from launch to launch, partitions do not, so the same seed picks the same clients and
sums their updates in the same order every time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from logging import WARNING

from flwr.app import Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from federated import message_keys as keys
from server.exchange import exchange
from server.reply_validation import check_partition_reply


class NodePartitions:
    """node ID -> partition, for the nodes that answered soundly; learned once per node."""

    def __init__(self) -> None:
        self.of: dict[int, int] = {}
        self.num_partitions: int | None = None
        self.refused: dict[int, str] = {}  # nodes whose answer was unusable, and why

    def learn(self, grid: Grid, nodes: Iterable[int], timeout: float) -> dict[int, str]:
        """Ask the nodes not asked before which partition they hold, waiting up to ``timeout``
        seconds for their answers; the new refusals, by node.

        The first answers fix the number of partitions (the most common claim). A node that
        claims another number, a partition already held, or fails to answer is left out of
        sampling, and logged; it is not asked again (a silent node would otherwise hold up every
        round by the timeout).
        """
        unknown = sorted(n for n in nodes if n not in self.of and n not in self.refused)
        if not unknown:
            return {}
        messages = [
            Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)
            for node in unknown
        ]
        answers = exchange(grid, messages, timeout=timeout)
        refused = {node: f"no answer within {timeout:g} s" for node in answers.timed_out}
        claims: dict[int, tuple[int, int]] = {}
        for reply in answers.replies:
            node = reply.metadata.src_node_id
            problem = check_partition_reply(reply)
            if problem:
                refused[node] = problem
                continue
            metrics = reply.content.metric_records[keys.METRICS]
            claims[node] = int(metrics[keys.PARTITION_ID]), int(metrics[keys.NUM_PARTITIONS])
        if self.num_partitions is None and claims:
            counts = Counter(count for _, count in claims.values())
            self.num_partitions = max(counts, key=lambda c: (counts[c], c))
        held = {partition: node for node, partition in self.of.items()}
        for node, (partition, count) in sorted(claims.items()):
            if count != self.num_partitions:
                refused[node] = (
                    f"claims {count} partitions, the federation has {self.num_partitions}"
                )
            elif partition in held:
                refused[node] = f"claims partition {partition}, which node {held[partition]} holds"
            else:
                self.of[node] = held[partition] = partition
        for node, reason in sorted(refused.items()):
            log(WARNING, "node %d left out of sampling: %s", node, reason)
        self.refused.update(refused)
        return refused
