"""How the server judges the nodes' claims of which partition they hold: the most common count
fixes the federation's, a tie cannot be won by a larger count, no claim above the data's size
counts, a partition that two nodes claim goes to neither, and a partition bound to a key goes
to that key only."""

from __future__ import annotations

from pathlib import Path

import pytest

from federated.deploy.node_keys import make_node_key
from federated.protocol.partition_keys import fingerprint, read_partition_keys, write_partition_keys
from server.node_partitions import settle_claims


def test_the_most_common_count_wins_and_the_others_are_refused() -> None:
    settled = settle_claims({1: (0, 3), 2: (1, 3), 3: (2, 4)}, None, {}, most=100)
    assert settled.num_partitions == 3 and settled.accepted == {1: 0, 2: 1}
    assert settled.refused == {3: "claims 4 partitions, the federation has 3"}


def test_a_huge_count_cannot_win_by_a_tie_or_at_all() -> None:
    settled = settle_claims({1: (0, 2), 2: (1, 10**9)}, None, {}, most=500)
    assert settled.num_partitions == 2 and settled.accepted == {1: 0}
    settled = settle_claims({1: (0, 4), 2: (1, 5)}, None, {}, most=500)
    assert settled.num_partitions == 4 and 2 in settled.refused  # a tie: the smaller number
    alone = settle_claims({7: (3, 10**9)}, None, {}, most=500)
    assert alone.num_partitions is None and alone.accepted == {}
    assert alone.refused == {7: "claims 1000000000 partitions; the data has 500 examples"}


@pytest.mark.parametrize("first", [5, 9])  # the claimants' node IDs in either order
def test_a_partition_two_nodes_claim_at_once_goes_to_neither(first: int) -> None:
    second = 14 - first
    settled = settle_claims({first: (1, 2), second: (1, 2), 3: (0, 2)}, None, {}, most=10)
    assert settled.accepted == {3: 0}
    assert settled.contested == {1: sorted([first, second])}
    assert settled.refused[first] == f"claims partition 1, which node {second} claims too"


def test_a_claim_of_a_held_partition_takes_it_from_its_holder_too() -> None:
    settled = settle_claims({5: (0, 2), 6: (1, 2)}, 2, {4: 0}, most=10)
    assert settled.accepted == {6: 1} and settled.contested == {0: [4, 5]}
    assert settled.revoked == {4}
    again = settle_claims({4: (0, 2)}, 2, {}, most=10)  # node 5 has gone: 4 holds it again
    assert again.accepted == {4: 0}


def test_a_bound_partition_goes_to_its_key_whatever_the_node_ids(tmp_path: Path) -> None:
    keys = [make_node_key(tmp_path / f"node-{i}.key")[1] for i in range(3)]
    table = write_partition_keys(tmp_path / "partition-keys.json", keys[:2])
    bound = read_partition_keys(str(table))
    fingerprints = [fingerprint(k.read_bytes()) for k in keys]
    for honest, hostile in [(3, 8), (8, 3)]:
        key_of = {honest: fingerprints[1], hostile: fingerprints[2], 1: fingerprints[0]}
        claims = {honest: (1, 2), hostile: (1, 2), 1: (0, 2)}
        settled = settle_claims(claims, None, {}, 10, bound, key_of)
        assert settled.accepted == {1: 0, honest: 1} and not settled.contested
        assert "binds to another node's key" in settled.refused[hostile]
    nokey = settle_claims({4: (0, 2)}, 2, {}, 10, bound, {4: None})  # e.g. no node auth
    assert 4 in nokey.refused and not nokey.accepted


def test_a_fingerprint_is_the_same_from_the_openssh_file_and_the_superlinks_pem(
    tmp_path: Path,
) -> None:
    from cryptography.hazmat.primitives import serialization

    public = make_node_key(tmp_path / "node.key")[1]
    key = serialization.load_ssh_public_key(public.read_bytes())
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert fingerprint(pem) == fingerprint(public.read_bytes()) is not None
    assert fingerprint(b"\x01" * 32) is None  # a simulated node's random bytes


@pytest.mark.parametrize(
    "text, says",
    [("[1, 2]", "not a JSON object"), ('{"a": "00"}', "entry 'a'"), ("{", "cannot be read")],
)
def test_a_malformed_table_is_refused_naming_what(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=says):
        read_partition_keys(str(path))
