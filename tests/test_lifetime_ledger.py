"""A device's privacy budget belongs to its data, not to a run: runs with different run keys on
one node compose into one lifetime ledger per data source, the device's own ceilings decline
what would pass them whatever the run config says, a source that trained before and lost its
ledger is refused rather than reset, and ``fedtune ledger`` shows it all."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict
from opacus.accountants import RDPAccountant

from client import app as client_app
from client.data_source import data_source
from client.node_config import NodeConfigError, node_settings
from federated.cli.main import main
from federated.config import parse_run_config
from federated.model.workspace import client_indices
from federated.node_state import STATE_DIR_ENV
from federated.privacy.lifetime_ledger import DEFAULT_DELTA, Event
from federated.privacy.record_count import noised_count
from federated.privacy.secret_randomness import INSECURE_SEED_ENV, secret_generator
from federated.protocol import message_keys as keys
from tests.test_private_releases import BASE, NODE, ZO, _train_message

ROOT = Path(__file__).resolve().parent.parent
RUN_A, RUN_B, RUN_C = "a" * 16, "b" * 16, "c" * 16
PARTITION = {"partition-id": 0, "num-partitions": 2}


@pytest.fixture(autouse=True)
def _node_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(INSECURE_SEED_ENV, "7")  # the noised count is known: see _steps


def _context(config: dict, node: dict | None = None) -> Context:
    """A fresh SuperNode process for one message: Flower's node state is empty."""
    return Context(5, NODE, {**PARTITION, **(node or {})}, RecordDict(), dict(config))


def _train(config: dict, key: str, context: Context | None = None, **node: float) -> Message:
    msg = _train_message(config)
    msg.content.config_records[keys.CONFIG][keys.RUN_KEY] = key
    return client_app.train(msg, context or _context(config, node))


def _metrics(reply: Message) -> dict:
    return dict(reply.content.metric_records[keys.METRICS])


def _steps(config: dict) -> tuple[Event, Event]:
    """The count's release and one round's steps, as every run of ``config`` on partition 0
    of 2 spends them (the secret generators are fixed, so each run draws the same count)."""
    parsed = parse_run_config(config)
    records = len(client_indices(parsed, 0, 2)[0])
    count = noised_count(records, parsed.dp.record.count_noise, secret_generator("record-count", 0))
    rate = min(1.0, parsed.train.batch_size / count)
    return (parsed.dp.record.count_noise, 1.0, 1), (1.0, rate, parsed.train.local_steps)


def _composed(*events: Event, delta: float = DEFAULT_DELTA) -> float:
    """Epsilon of ``events`` by opacus's RDP accountant itself."""
    accountant = RDPAccountant()
    accountant.history = list(events)
    return accountant.get_epsilon(delta)


@pytest.mark.parametrize("mode", ["lora", "zo"])
def test_two_runs_on_one_node_compose_into_one_lifetime_ledger(
    mode: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = {**BASE, **(ZO if mode == "zo" else {})}
    count, step = _steps(config)
    first = _train(config, RUN_A)
    second = _train(config, RUN_B)  # another run, another process: today's fresh ledger
    again = _train(config, RUN_A)  # the first run's next round
    # Each reply states its own run's spend...
    assert _metrics(first)[keys.DP_EPSILON] == pytest.approx(_composed(count, step))
    assert _metrics(second)[keys.DP_EPSILON] == pytest.approx(_composed(count, step))
    assert _metrics(again)[keys.DP_EPSILON] == pytest.approx(_composed(count, step, step))
    # ...and the data source's one ledger composes both runs.
    (path,) = (tmp_path / "privacy" / "ledgers").glob("partition-*.json")
    out = _ledger_report(f"fedtune ledger --state-dir {tmp_path}", capsys)
    lifetime = _composed(count, step, step, count, step)
    assert f"epsilon {lifetime:.3g} at ledger-delta 1e-05 over 2 runs, 3 rounds" in out
    assert f"run {RUN_A}: 2 rounds, epsilon {_composed(count, step, step):.3g}" in out
    assert f"run {RUN_B}: 1 round, epsilon {_composed(count, step):.3g}" in out
    assert path.stem.startswith("partition-")


def _declined(reply: Message) -> bool:
    return keys.DP_DECLINED in _metrics(reply) and not reply.content.array_records


def test_the_per_run_ceiling_declines_whatever_the_run_config_says() -> None:
    # The run asks for a loose budget at a loose delta; the device's ceiling is at its own delta.
    config = {**BASE, "dp.target-epsilon": 50.0, "dp.delta": 0.1}
    count, step = _steps(config)
    ceiling = (_composed(count, step) + _composed(count, step, step)) / 2
    assert not _declined(_train(config, RUN_A, **{"max-epsilon-per-run": ceiling}))
    reply = _train(config, RUN_A, **{"max-epsilon-per-run": ceiling})
    assert _declined(reply)
    assert _metrics(reply)[keys.DP_EPSILON] == pytest.approx(_composed(count, step, delta=0.1))
    # A run's ceiling is per run: another run on the same data may spend its own.
    assert not _declined(_train(config, RUN_B, **{"max-epsilon-per-run": ceiling}))


def test_the_total_ceiling_declines_across_runs_and_refuses_a_new_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    count, step = _steps(BASE)
    two_runs = _composed(count, step, count, step)
    ceiling = (two_runs + _composed(count, step, count, step, step)) / 2
    node = {"max-epsilon-total": ceiling}
    assert not _declined(_train(BASE, RUN_A, **node))
    assert not _declined(_train(BASE, RUN_B, **node))
    assert _declined(_train(BASE, RUN_B, **node))  # the lifetime spend, not the run's, is full
    with pytest.raises(RuntimeError, match="node config 'max-epsilon-total' = .*trains nothing"):
        _train(BASE, RUN_C, **node)  # a declined reply would release the new run's count
    out = _ledger_report("fedtune ledger", capsys)
    assert f"epsilon {two_runs:.3g} at ledger-delta 1e-05 over 2 runs, 2 rounds" in out
    assert f"ceilings: max-epsilon-total {ceiling:g}" in out


def test_a_source_that_trained_before_without_a_readable_ledger_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _train(BASE, RUN_A)
    (ledger,) = (tmp_path / "privacy" / "ledgers").glob("partition-*.json")
    text = ledger.read_text()
    ledger.write_text(text[:-7])  # a torn write, a bad disk
    with pytest.raises(RuntimeError, match="cannot read this node's privacy ledger"):
        _train(BASE, RUN_B)
    ledger.unlink()
    with pytest.raises(RuntimeError, match="trained on this node before.* is missing"):
        _train(BASE, RUN_B)  # a new run key is no way around it
    assert "trained before, but its ledger" in _ledger_report("fedtune ledger", capsys)
    # Another data source on the same node is not held back by this one.
    assert not _declined(_train(BASE, RUN_B, **{"partition-id": 1}))
    ledger.write_text(text)  # restored: the source trains again, its spending intact
    assert _metrics(_train(BASE, RUN_B))[keys.DP_EPSILON] > 0


def test_a_state_folder_wiped_under_a_running_node_is_refused(tmp_path: Path) -> None:
    context = _context(BASE)
    _train(BASE, RUN_A, context)
    for path in sorted((tmp_path / "privacy").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    with pytest.raises(RuntimeError, match="trained on this node before"):
        _train(BASE, RUN_A, context)  # the node state still knows the source trained


def _ledger_report(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``command`` (``fedtune ledger ...``) prints, run as the ``fedtune`` entry point."""
    program, *argv = shlex.split(command)
    assert program == "fedtune"
    capsys.readouterr()
    assert main(argv) == 0
    return capsys.readouterr().out


def test_the_privacy_pages_ledger_command_prints_the_ledger_as_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    page = (ROOT / "docs" / "privacy.md").read_text()
    (command,) = re.findall(r"^(fedtune ledger)\s*(?:#.*)?$", page, flags=re.MULTILINE)
    assert "none: no data source has trained" in _ledger_report(command, capsys)
    _train(BASE, RUN_A, **{"max-epsilon-per-run": 9.0})
    out = _ledger_report(command, capsys).splitlines()
    assert out[1].startswith("wordnet partition 0 of 2 (iid, seed 0; settings ")
    assert re.fullmatch(
        r"  epsilon [0-9.]+ at ledger-delta 1e-05 over 1 run, 1 round; "
        r"ceilings: max-epsilon-per-run 9",
        out[2],
    )
    assert out[3].startswith(f"  run {RUN_A}: 1 round, epsilon ")


def test_a_data_file_is_its_bytes_a_partition_is_its_settings(tmp_path: Path) -> None:
    config = parse_run_config(BASE)
    original = tmp_path / "notes.jsonl"
    original.write_text('{"text": "a", "label": "x"}\n')
    moved = tmp_path / "elsewhere" / "renamed.jsonl"
    moved.parent.mkdir()
    moved.write_bytes(original.read_bytes())

    def source(node: dict) -> str:
        return data_source(config, node_settings(_context(BASE, node))).id

    assert source({"data-file": str(original)}) == source({"data-file": str(moved)})
    moved.write_text('{"text": "b", "label": "x"}\n')
    assert source({"data-file": str(original)}) != source({"data-file": str(moved)})
    assert source({}) != source({"partition-id": 1})
    other = parse_run_config({**BASE, "seed": 1})
    assert data_source(other, node_settings(_context(BASE))).id != source({})


@pytest.mark.parametrize(
    ("node", "line"),
    [
        (
            {"max-epsilon-total": 0},
            "node config 'max-epsilon-total' = 0: expected a number above 0",
        ),
        ({"max-epsilon-per-run": "lots"}, "node config 'max-epsilon-per-run' = 'lots': expected"),
        ({"ledger-delta": 1.0}, "node config 'ledger-delta' = 1.0: expected a number above 0 and"),
    ],
)
def test_a_bad_ceiling_is_one_line_naming_its_key(node: dict, line: str) -> None:
    with pytest.raises(NodeConfigError) as refused:
        node_settings(_context(BASE, node))
    assert str(refused.value).startswith(line) and "\n" not in str(refused.value)
