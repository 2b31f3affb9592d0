"""Plot and tabulate which DP settings keep accuracy: ``sweep.json``, ``many_clients.json`` and
the audits of every run that had one.

python -m benchmarks.privacy.settings_report   # writes dp_settings.png, prints the tables
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.privacy.report import epsilon_header, plot_against_epsilon
from benchmarks.privacy.run import EPSILONS, RUNS, audit_of

HERE = Path(__file__).resolve().parent
NO_DP = {"115": "fedavg-no-dp", "580": "fedavg-5x-data-no-dp", "1000 clients": "clients1000-no-dp"}


def _final(name: str) -> float | None:
    path = RUNS / name / "metrics.jsonl"
    if not path.is_file():
        return None
    return json.loads(path.read_text().splitlines()[-1])["test_accuracy"]


def rows() -> dict[str, tuple[list[float | None], float | None]]:
    """Each setting's final accuracy at ε = 1, 3, 8, and the same federation's without DP."""
    out = {}
    sweep = json.loads((HERE / "sweep.json").read_text()) if (HERE / "sweep.json").is_file() else {}
    for data, result in sweep.get("sweeps", {}).items():
        for label, key in (
            ("record-level, starting settings (batch 16, rate 3e-3)", "start_at"),
            ("record-level, swept best", "best_at"),
        ):
            finals = [result[key].get(f"{e:g}", {}).get("accuracy") for e in EPSILONS]
            out[f"{label}, ~{data} records a client"] = (finals, _final(NO_DP[data]))
    many = [_final(f"clients1000-eps{e:g}") for e in EPSILONS]
    out["client-level, 1,000 clients, ~100 a round"] = (many, _final(NO_DP["1000 clients"]))
    return out


def plot(table: dict, path: Path) -> None:
    series = {
        row: [v if v is not None else float("nan") for v in [*finals, plain]]
        for row, (finals, plain) in table.items()
    }
    plot_against_epsilon(series, "MiniLM-L6, WordNet 8 classes: DP settings", path)


def summary_table(table: dict) -> str:
    lines = epsilon_header("setting")
    for row, (finals, plain) in table.items():
        cells = []
        for value in finals:
            share = f" ({value / plain:.0%})" if value is not None and plain else ""
            cells.append("-" if value is None else f"{value:.3f}{share}")
        cells.append("-" if plain is None else f"{plain:.3f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_tables() -> str:
    path = HERE / "sweep.json"
    if not path.is_file():
        return ""
    out = []
    for data, result in json.loads(path.read_text())["sweeps"].items():
        out.append(f"~{data} records a client, ε = 3 (best: {result['best']}):\n")
        out.append("| knob | accuracy by value |\n|---|---|")
        for stage in result["stages"]:
            cells = ", ".join(f"{v}: {a:.3f}" for v, a in stage["accuracy"].items())
            out.append(f"| {stage['knob']} | {cells} |")
        out.append("")
    return "\n".join(out)


def audit_table() -> str:
    lines = [
        "| run | accountant ε | audit's ε lower bound (95%) | right guesses | mean loss "
        "inserted / held out |",
        "|---|---|---|---|---|",
    ]
    for summary in sorted(RUNS.glob("*/summary.json")):
        audit = audit_of(summary.parent.name)
        if audit is None:
            continue
        spent = audit["accountant_epsilon"]
        accountant = spent.get("record_level", spent.get("client_level"))
        lines.append(
            f"| {summary.parent.name} | "
            f"{'none (no DP)' if accountant is None else f'{accountant:.2f}'} | "
            f"{audit['epsilon_lower_bound']:.2f} | "
            f"{audit['right_guesses']} of {audit['guesses']} | "
            f"{audit['mean_loss_inserted']:.3f} / {audit['mean_loss_held_out']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    table = rows()
    plot(table, HERE / "dp_settings.png")
    print(summary_table(table))
    print()
    print(stage_tables())
    print(audit_table())


if __name__ == "__main__":
    main()
