"""``fedtune ledger``: what record-level DP has spent on a device's data, per data source.

Read from the node's state folder (``client.privacy_state``): each data source's runs, rounds
and lifetime epsilon at the delta its device states it at, with the device's ceilings as they
were at the ledger's last write. A source that trained before and whose ledger is missing or
unreadable is listed as such: the node refuses to train on it until the file is restored.
"""

from __future__ import annotations

from pathlib import Path

from federated.node_state import PrivacyStateError, index_folder, ledger_folder, read_ledger
from federated.privacy.lifetime_ledger import DELTA_KEY, PER_RUN_KEY, TOTAL_KEY, LifetimeLedger

_REFUSED = "this node refuses to train on it until the file is restored"


def _ceilings(ledger: LifetimeLedger) -> str:
    limits = ledger.ceilings.to_json()
    named = [f"{key} {limits[key]:g}" for key in (PER_RUN_KEY, TOTAL_KEY) if limits[key]]
    return "ceilings: " + ", ".join(named) if named else "no ceilings"


def _counted(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _describe(ledger: LifetimeLedger) -> list[str]:
    delta = ledger.ceilings.delta
    rounds = sum(run.rounds for run in ledger.runs.values())
    lines = [
        ledger.label,
        f"  epsilon {ledger.epsilon():.3g} at {DELTA_KEY} {delta:g} over "
        f"{_counted(len(ledger.runs), 'run')}, {_counted(rounds, 'round')}; {_ceilings(ledger)}",
    ]
    for key, run in ledger.runs.items():
        epsilon = run.ledger.epsilon(delta)
        lines.append(f"  run {key}: {_counted(run.rounds, 'round')}, epsilon {epsilon:.3g}")
    return lines


def describe_ledgers(root: Path) -> str:
    """Every data source that has trained under record-level DP with state folder ``root``."""
    ledgers, index = ledger_folder(root), index_folder(root)
    sources = {path.stem: path for path in ledgers.glob("*.json")}
    trained = {path.name: path for path in index.iterdir()} if index.is_dir() else {}
    lines = [f"privacy ledgers in {ledgers}"]
    if not sources and not trained:
        lines.append("  none: no data source has trained under record-level DP here")
    for source in sorted(set(sources) | set(trained)):
        path = ledgers / f"{source}.json"
        if source not in sources:
            try:
                label = trained[source].read_text()
            except OSError:
                label = source
            lines += [label, f"  trained before, but its ledger {path} is missing: {_REFUSED}"]
            continue
        try:
            lines += _describe(read_ledger(path))
        except PrivacyStateError as err:
            lines += [source, f"  {err}: {_REFUSED}"]
    return "\n".join(lines)
