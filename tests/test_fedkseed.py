"""FedKSeed's server math and the seed-sum sync, against their definitions."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ConfigRecord, RecordDict

from federated.protocol import message_keys as keys
from federated.protocol.wire import tensors_to_record
from federated.zo.sums_sync import FULL, OutOfSync, SumsLedger, client_sums
from strategies.fedkseed import aggregate_seed_scalars, seed_probabilities


def test_round_delta_is_the_weighted_mean_of_client_steps() -> None:
    steps = [
        (torch.tensor([0, 2, 2]), torch.tensor([1.0, 2.0, 3.0])),
        (torch.tensor([1, 2]), torch.tensor([-4.0, 0.5])),
    ]
    delta = aggregate_seed_scalars(steps, [1.0, 3.0], pool_size=4)
    # p = (1/4, 3/4); seed 2 collects 1/4·(2+3) + 3/4·0.5
    torch.testing.assert_close(delta, torch.tensor([0.25, -3.0, 1.25 + 0.375, 0.0]))


def test_pro_probabilities_favour_seeds_with_larger_scalars() -> None:
    amplitude = torch.tensor([0.0, 1.0, 4.0, 0.0], dtype=torch.float64)
    counts = torch.tensor([0.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    p = seed_probabilities(amplitude, counts)
    assert p.sum().item() == pytest.approx(1.0)
    assert p[2] > p[1] > p[0] == p[3]
    # importances (0, 1/2, 2, 0) scaled to (0, 1/4, 1, 0), then softmax
    expected = torch.tensor([0.0, 0.25, 1.0, 0.0]).softmax(0)
    torch.testing.assert_close(p, expected)


def _message(arrays: dict, version: int, base: int) -> RecordDict:
    config = {keys.SERVER_ROUND: 1, keys.SUMS_VERSION: version, keys.SUMS_BASE_VERSION: base}
    return RecordDict({keys.ARRAYS: tensors_to_record(arrays), keys.CONFIG: ConfigRecord(config)})


def test_a_known_node_gets_only_changes_and_ends_with_the_same_sums() -> None:
    ledger = SumsLedger(torch.zeros(6))
    state = RecordDict()
    arrays, base = ledger.payload(node=7, changes_only=True)
    # A new node at the start: every sum is zero, so nothing needs to travel.
    assert base == FULL and arrays[keys.CHANGED_INDICES].numel() == 0
    sums, version = client_sums(_message(arrays, ledger.version, base), state, 6)
    assert torch.equal(sums, torch.zeros(6))
    ledger.confirm(7, version)
    ledger.advance(torch.tensor([0.0, 1.0, 0.0, 0.0, 2.0, 0.0]))
    arrays, base = ledger.payload(node=7, changes_only=True)
    assert base == 0 and arrays[keys.CHANGED_INDICES].tolist() == [1, 4]
    assert arrays[keys.CHANGED_INDICES].dtype == torch.int32
    sums, version = client_sums(_message(arrays, ledger.version, base), state, 6)
    assert torch.equal(sums, ledger.sums) and version == ledger.version == 1


def test_a_new_or_restarted_node_gets_the_moved_seeds_and_drops_what_it_held() -> None:
    ledger = SumsLedger(torch.zeros(8))
    ledger.advance(torch.tensor([0.0, 0.5, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0]))
    stale = RecordDict()
    client_sums(_message({keys.SEED_SUMS: torch.full((8,), 9.0)}, 0, FULL), stale, 8)
    arrays, base = ledger.payload(node=3, changes_only=True)  # the server does not know node 3
    assert base == FULL and arrays[keys.CHANGED_INDICES].tolist() == [1, 5]
    sums, version = client_sums(_message(arrays, ledger.version, base), stale, 8)
    assert torch.equal(sums, ledger.sums) and version == 1


@pytest.mark.parametrize("known", [False, True])
def test_all_k_sums_go_dense_once_half_of_them_moved(known: bool) -> None:
    ledger = SumsLedger(torch.zeros(8))
    if known:
        ledger.confirm(2, 0)
    ledger.advance(torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]))
    arrays, base = ledger.payload(node=2, changes_only=True)
    assert base == FULL and set(arrays) == {keys.SEED_SUMS}
    sums, _ = client_sums(_message(arrays, ledger.version, base), RecordDict(), 8)
    assert torch.equal(sums, ledger.sums)


def test_downlink_sums_always_sends_every_sum() -> None:
    ledger = SumsLedger(torch.zeros(8))
    ledger.confirm(2, 0)
    ledger.advance(torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]))
    arrays, base = ledger.payload(node=2, changes_only=False)
    assert base == FULL and torch.equal(arrays[keys.SEED_SUMS], ledger.sums)


def test_changes_for_another_version_are_refused() -> None:
    ledger = SumsLedger(torch.zeros(3))
    ledger.confirm(1, 0)
    ledger.advance(torch.tensor([0.0, 1.0, 0.0]))
    arrays, base = ledger.payload(node=1, changes_only=True)
    with pytest.raises(OutOfSync, match="version 0, this client holds None"):
        client_sums(_message(arrays, ledger.version, base), RecordDict(), 3)
    ledger.forget(1)
    assert ledger.payload(node=1, changes_only=True)[1] == FULL
