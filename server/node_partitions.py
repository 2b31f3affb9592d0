"""Which data partition each node holds, asked of the nodes themselves.

The server samples clients and orders their replies by partition, not by node ID: node IDs
change from launch to launch, partitions do not, so the same seed picks the same clients and
sums their updates in the same order every time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import ERROR, WARNING

from flwr.app import Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from federated.protocol import message_keys as keys
from federated.protocol.partition_keys import fingerprint
from server.exchange import exchange
from server.reply_validation import check_partition_reply


class NodePartitions:
    """node ID -> partition, for the nodes that answered soundly; learned once per node.

    In a LoRA run a node may say that it takes zeroth-order steps on the factors (its node
    config's mode or device): where the run allows that (``zo_steps`` > 0, the steps such a
    reply may hold), its partition goes into ``zo_steps``; else the node is refused with
    ``zo_refusal``. ``bound`` (partition -> key fingerprint, ``server.partition-keys``) names
    the only node key that may hold a partition.
    """

    def __init__(
        self,
        most: int,
        zo_steps: int = 0,
        zo_refusal: str = "",
        bound: Mapping[int, str] | None = None,
    ) -> None:
        self.most = most  # no data splits into more partitions than it has examples
        self.of: dict[int, int] = {}
        self.num_partitions: int | None = None
        self.refused: dict[int, str] = {}  # nodes whose answer was unusable, and why
        self.zo_steps: dict[int, int] = {}  # partition -> steps, of zeroth-order nodes
        self.zo_steps_allowed, self.zo_refusal = zo_steps, zo_refusal
        self.bound = dict(bound or {})

    def _keys(self, grid: Grid) -> dict[int, str | None]:
        """node -> fingerprint of the key the SuperLink registered it with (bindings only)."""
        if not self.bound:
            return {}
        return {int(n.node_id): fingerprint(bytes(n.public_key)) for n in grid.get_nodes()}

    def learn(self, grid: Grid, nodes: Iterable[int], timeout: float) -> dict[int, str]:
        """Ask the nodes not asked before which partition they hold, waiting up to ``timeout``
        seconds for their answers; the new refusals, by node.

        The first answers fix the number of partitions (``settle_claims``). A node that claims
        another number, a partition bound to another key, or fails to answer is left out of
        sampling, and logged; it is not asked again (a silent node would otherwise hold up every
        round by the timeout). A partition that two connected nodes claim goes to neither, and
        both are asked again each round until one is gone. A node the SuperLink reports
        unreachable is asked again when it is back.
        """
        connected = set(nodes)
        unknown = sorted(n for n in connected if n not in self.of and n not in self.refused)
        if not unknown:
            return {}
        messages = [
            Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)
            for node in unknown
        ]
        answers = exchange(grid, messages, timeout=timeout)
        refused = {node: f"no answer within {timeout:g} s" for node in answers.timed_out}
        claims: dict[int, tuple[int, int]] = {}
        zeroth_order: set[int] = set()
        for reply in answers.replies:
            node = reply.metadata.src_node_id
            problem = check_partition_reply(reply)
            if problem:
                refused[node] = problem
                continue
            metrics = reply.content.metric_records[keys.METRICS]
            if metrics[keys.ZO_ON_FACTORS]:
                if not self.zo_steps_allowed:
                    refused[node] = f"takes zeroth-order steps on the factors: {self.zo_refusal}"
                    continue
                zeroth_order.add(node)
            claims[node] = int(metrics[keys.PARTITION_ID]), int(metrics[keys.NUM_PARTITIONS])
        # A partition whose node is gone (a device restarted without node authentication
        # comes back under a new node ID) goes to whoever claims it now.
        held = {node: p for node, p in self.of.items() if node in connected}
        settled = settle_claims(
            claims, self.num_partitions, held, self.most, self.bound, self._keys(grid)
        )
        self.num_partitions = settled.num_partitions
        taken = set(settled.accepted.values())
        for gone in [
            n
            for n, p in self.of.items()
            if (p in taken and n not in connected) or n in settled.revoked
        ]:
            del self.of[gone]  # in place: the sampler and the screen hold this mapping
        self.of.update(settled.accepted)
        for node, partition in settled.accepted.items():
            if node in zeroth_order:
                self.zo_steps[partition] = self.zo_steps_allowed
            else:
                self.zo_steps.pop(partition, None)
        for partition, claimants in sorted(settled.contested.items()):
            log(
                ERROR,
                "partition %d is claimed by nodes %s: given to none of them until one "
                "is stopped, or server.partition-keys binds it to one node's key",
                partition,
                ", ".join(map(str, claimants)),
            )
        refused.update(settled.refused)
        for node, reason in sorted(refused.items()):
            log(WARNING, "node %d left out of sampling: %s", node, reason)
        # Nodes in a contest are asked again: the other claimant may be a device's old node ID
        # that the SuperLink has not yet let go.
        asked_again = {n for claimants in settled.contested.values() for n in claimants}
        self.refused.update({n: r for n, r in refused.items() if n not in asked_again})
        return refused


@dataclass
class Settlement:
    """What ``settle_claims`` decided."""

    num_partitions: int | None
    accepted: dict[int, int]  # node -> partition
    refused: dict[int, str]  # node -> why
    contested: dict[int, list[int]] = field(default_factory=dict)  # partition -> claimants
    revoked: set[int] = field(default_factory=set)  # holders that lost a contested partition


def settle_claims(
    claims: Mapping[int, tuple[int, int]],
    num_partitions: int | None,
    held_by: Mapping[int, int],
    most: int,
    bound: Mapping[int, str] | None = None,
    key_of: Mapping[int, str | None] | None = None,
) -> Settlement:
    """Nodes' claims (node -> (partition, count)) judged against the federation's number of
    partitions, set here from the most common claim when not yet known (a tie goes to the
    smaller number, and no claim above ``most`` counts: a hostile node cannot make the server
    split the data a billion ways); against ``bound`` (partition -> the fingerprint of the only
    key that may hold it, ``key_of`` giving each node's); and against the partitions ``held_by``
    nodes already (node -> partition). A partition with more than one claimant, counting its
    holder, goes to none of them: node IDs change from launch to launch, so no order among them
    can tell the honest node from one that claims its partition."""
    bound, key_of = bound or {}, key_of or {}
    refused = {
        node: f"claims {count} partitions; the data has {most} examples"
        for node, (_, count) in claims.items()
        if count > most
    }
    if num_partitions is None:
        counts = Counter(count for node, (_, count) in claims.items() if node not in refused)
        num_partitions = max(counts, key=lambda c: (counts[c], -c), default=None)
    claimants: dict[int, list[int]] = {}
    for node, (partition, count) in sorted(claims.items()):
        if node in refused:
            continue
        if count != num_partitions:
            refused[node] = f"claims {count} partitions, the federation has {num_partitions}"
        elif partition in bound and key_of.get(node) != bound[partition]:
            refused[node] = (
                f"claims partition {partition}, which server.partition-keys binds "
                "to another node's key"
            )
        else:
            claimants.setdefault(partition, []).append(node)
    settled = Settlement(num_partitions, {}, refused)
    for holder, partition in held_by.items():
        if partition in claimants and holder not in claimants[partition]:
            claimants[partition].insert(0, holder)
            settled.revoked.add(holder)
    for partition, nodes in claimants.items():
        if len(nodes) == 1:
            settled.accepted[nodes[0]] = partition
            continue
        settled.contested[partition] = nodes
        for node in nodes:
            others = ", ".join(str(n) for n in nodes if n != node)
            refused[node] = f"claims partition {partition}, which node {others} claims too"
    return settled
