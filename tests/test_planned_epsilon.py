"""The epsilon a record-level DP run states at start is what its clients spend: worked out here
the way a client accounts it (``RoundPrivacy`` from its noised count, the count's release, then
every round's steps on its ledger), on the partitions of the real split."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from client.node_config import NodeSettings
from client.node_records import node_records
from client.privacy_budget import RoundPrivacy
from federated.config import RunConfig, parse_run_config
from federated.config.cli import main
from federated.privacy.planned_epsilon import (
    partition_record_counts,
    planned_epsilon,
    planned_epsilon_line,
    round_mechanism,
)
from federated.privacy.record_count import COUNT_NOISE_SIGMAS, count_release, noised_count
from federated.privacy.secret_randomness import INSECURE_SEED_ENV, secret_generator

CLIENTS = 3
# The issue's setting: 3 rounds at noise 1.0, an explicit batch of 4 and 5 steps; a Dirichlet
# split, so that the partitions differ in size.
RUN = {
    "model.name": "tiny-llama",
    "data.partitioner": "dirichlet",
    "num-server-rounds": 3,
    "dp.mode": "record",
    "dp.noise-multiplier": 1.0,
    "train.batch-size": 4,
    "train.local-steps": 5,
    "audit.canaries": 30,
}


def _client_spends(config: RunConfig, count: int) -> float:
    """A client's epsilon after every round of the run, accounted as the client does."""
    r = RoundPrivacy.of(config, count)
    ledger = count_release(config.dp.record.count_noise)
    for _ in range(config.num_server_rounds):
        ledger.spend(r.noise_multiplier, r.sample_rate, r.steps)
    return ledger.epsilon(r.delta)


def test_the_start_line_states_what_the_smallest_partitions_client_spends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = parse_run_config(RUN)
    counts = partition_record_counts(config, CLIENTS)
    trained = [
        node_records(config, NodeSettings(partition_id=p, num_partitions=CLIENTS))[0]
        for p in range(CLIENTS)
    ]
    assert counts == [len(records) for records in trained]  # canaries included
    assert len(set(counts)) == CLIENTS  # the worst case is a real choice here
    plan = planned_epsilon(config, counts)
    fewest = min(counts)
    assert plan.exact == _client_spends(config, fewest)
    low = round(fewest - COUNT_NOISE_SIGMAS * config.dp.record.count_noise)
    assert plan.epsilon == _client_spends(config, low) > plan.exact
    # Each client's own noised count, drawn as it draws it: within the bound.
    monkeypatch.setenv(INSECURE_SEED_ENV, "5")
    for p, n in enumerate(counts):
        count = noised_count(n, config.dp.record.count_noise, secret_generator("record-count", p))
        assert _client_spends(config, count) <= plan.epsilon
    line = planned_epsilon_line(config, CLIENTS)
    assert line.startswith(
        f"record-level DP: each client spends at most epsilon {plan.epsilon:.3g} (delta 1e-05) "
        f"over 3 rounds if it trains in every one; {plan.exact:.3g} at the smallest partition's "
        f"exact record count (partitions of {fewest}-{max(counts)} records, noise multiplier 1, "
        "batch 4, 5 steps a round; the bound holds unless a noised count falls over 6 std"
    )


def test_the_issues_example_spends_what_it_said() -> None:
    # 580 records, noise 1.0, 3 rounds: batch 4 and 5 steps as written, not the tuned 64 and 8.
    written = planned_epsilon(parse_run_config({**RUN, "audit.canaries": 0}), [580])
    assert round(written.exact, 2) == 0.95
    tuned = parse_run_config({"dp.mode": "record", "dp.noise-multiplier": 1.0})
    assert round(planned_epsilon(tuned, [580]).exact, 2) == 4.88


def test_under_a_target_the_line_states_the_target_and_the_noise_the_client_takes() -> None:
    config = parse_run_config({**RUN, "dp.noise-multiplier": 0.0, "dp.target-epsilon": 3.0})
    counts = partition_record_counts(config, CLIENTS)
    plan = planned_epsilon(config, counts)
    fewest = min(counts)
    assert plan.epsilon == 3.0 and plan.exact == _client_spends(config, fewest) <= 3.0
    assert plan.noise_multiplier == RoundPrivacy.of(config, fewest).noise_multiplier
    assert planned_epsilon_line(config, CLIENTS).startswith(
        "record-level DP: each client spends at most epsilon 3 (delta 1e-05) over 3 rounds if it "
        "trains in every one: dp.target-epsilon sets its noise from its noised record count "
        f"(noise multiplier {plan.noise_multiplier:.3g} at the smallest partition's {fewest} "
        "records"
    )


def test_a_target_below_the_noises_bound_caps_the_line() -> None:
    config = parse_run_config({**RUN, "dp.target-epsilon": 0.5})
    plan = planned_epsilon(config, partition_record_counts(config, CLIENTS))
    assert plan.epsilon == 0.5 < plan.noise_bound
    assert planned_epsilon_line(config, CLIENTS).startswith(
        "record-level DP: each client spends at most epsilon 0.5 (delta 1e-05) over 3 rounds if "
        "it trains in every one: dp.target-epsilon declines a round past it, where the noise "
        f"alone allows {plan.noise_bound:.3g}"
    )


@pytest.mark.parametrize("count", [1, 3, 117, 580, 5000])
@pytest.mark.parametrize("budget", [{}, {"dp.noise-multiplier": 0.0, "dp.target-epsilon": 2.0}])
def test_the_mechanism_is_the_clients(count: int, budget: dict) -> None:
    config = parse_run_config({**RUN, **budget})
    r = RoundPrivacy.of(config, count)
    assert round_mechanism(config, count) == (r.noise_multiplier, r.sample_rate)


def test_without_the_partitions_the_line_says_what_it_knows() -> None:
    config = parse_run_config({**RUN, "server.max-examples": 100})
    assert planned_epsilon_line(config, CLIENTS) == (
        "record-level DP: each client's epsilon (delta 1e-05) over 3 rounds if it trains in "
        "every one grows with its sampling rate, 4 / its noised record count, and the counts "
        "are unknown: nodes may train on their own data files (server.max-examples is set) "
        "(noise multiplier 1, batch 4, 5 steps a round)"
    )


def test_the_check_command_prints_the_runs_line(capsys: pytest.CaptureFixture[str]) -> None:
    check = (
        "model.name='tiny-llama' data.partitioner='dirichlet' num-server-rounds=3 "
        "dp.mode='record' dp.noise-multiplier=1.0 train.batch-size=4 train.local-steps=5 "
        "audit.canaries=30"
    )
    assert main(["--check", check, "--clients", str(CLIENTS)]) == 0
    said = capsys.readouterr().out.splitlines()
    assert planned_epsilon_line(parse_run_config(RUN), CLIENTS) in said
    assert main(["--check", check]) == 0
    assert "give --clients N to split data.name" in capsys.readouterr().out
    assert main(["--check", check, "--clients", "100000"]) == 2
    assert "--clients 100000: the data cannot be split" in capsys.readouterr().out


def test_the_privacy_pages_check_example_prints_what_the_page_shows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "privacy.md").read_text()
    command = (
        "python -m federated.config --check \"data.partitioner='iid' dp.mode='record' "
        'dp.noise-multiplier=1.0 train.batch-size=4 train.local-steps=5" --clients 3'
    )
    assert command in page
    assert main(shlex.split(command)[3:]) == 0
    assert "```text\n" + capsys.readouterr().out + "```" in page
    # The same run with the auto batch and steps, as the page compares it.
    auto = command.replace(" train.batch-size=4 train.local-steps=5", "")
    assert main(shlex.split(auto)[3:]) == 0
    plan = capsys.readouterr().out
    assert "at most epsilon 7.22 " in plan and "; 5.66 at the smallest" in plan
    assert "would spend at most 7.22 (5.66 at the exact count)" in " ".join(page.split())
