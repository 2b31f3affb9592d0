"""Plot and tabulate the privacy benchmark: ``runs.json`` and ``step_cost.json``.

python -m benchmarks.privacy.report    # writes privacy_utility.png, prints the markdown tables
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save
from benchmarks.privacy.run import EPSILONS, METHODS

HERE = Path(__file__).resolve().parent


# Each row: its runs at each epsilon and without DP; client-level DP's baseline is plain fedavg.
ROWS = {
    **{m: ([f"{m}-eps{e:g}" for e in EPSILONS], f"{m}-no-dp") for m in METHODS},
    "client-level fedavg": ([f"client-level-eps{e:g}" for e in EPSILONS], "fedavg-no-dp"),
    "distributed DP fedavg": ([f"distributed-eps{e:g}" for e in EPSILONS], "fedavg-no-dp"),
}


def _spent(run: dict) -> float:
    """The most any client spent (record-level), or the run's client-level epsilon."""
    client_level = run["client_level_epsilon"][-1]
    return client_level if client_level is not None else run["max_client_epsilon"][-1]


def plot_against_epsilon(series: dict[str, list[float]], title: str, path: Path) -> None:
    """Each series' final accuracy at ε = 1, 3, 8 and without DP (NaN where a run is missing)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = [f"ε={e:g}" for e in EPSILONS] + ["no DP"]
    for label, finals in series.items():
        ax.plot(range(len(finals)), finals, marker="o", label=label)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("final test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)


def plot(runs: dict, path: Path) -> None:
    series = {
        row: [runs["runs"][n]["accuracy"][-1] for n in [*private, plain]]
        for row, (private, plain) in ROWS.items()
    }
    plot_against_epsilon(series, "MiniLM-L6, WordNet 8 classes, 20 clients: DP", path)


def epsilon_header(first: str) -> list[str]:
    """A markdown table's head: ``first``, then ε = 1, 3, 8 and no DP."""
    return [
        f"| {first} | " + " | ".join(f"ε={e:g}" for e in EPSILONS) + " | no DP |",
        "|---|" + "---|" * (len(EPSILONS) + 1),
    ]


def utility_table(runs: dict) -> str:
    lines = epsilon_header("method")
    for row, (private, plain) in ROWS.items():
        cells = []
        for name in private:
            run = runs["runs"][name]
            cells.append(f"{run['accuracy'][-1]:.3f} (spent {_spent(run):.2f})")
        cells.append(f"{runs['runs'][plain]['accuracy'][-1]:.3f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def secagg_table(runs: dict) -> str:
    plain, secure = runs["runs"]["fedavg-no-dp"], runs["runs"]["fedavg-secagg"]
    lines = [
        "| fedavg | round time | server aggregation | up / client / round | down / client / round "
        "| final accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in (("plain", plain), ("SecAgg+", secure)):
        lines.append(
            f"| {name} | {statistics.fmean(run['round_seconds']):.1f} s | "
            f"{statistics.fmean(run['aggregation_seconds']) * 1e3:.0f} ms | "
            f"{statistics.fmean(run['bytes_up_per_client']) / 1e3:.0f} KB | "
            f"{statistics.fmean(run['bytes_down_per_client']) / 1e3:.0f} KB | "
            f"{run['accuracy'][-1]:.3f} |"
        )
    return "\n".join(lines)


STAGES = ("setup", "share_keys", "collect", "consistency", "unmask")


def stage_table(runs: dict) -> str:
    """What each SecAgg+ stage costs a round: KB down + up over all its clients, and seconds
    (means over the rounds that got that far), for every run under SecAgg+; and the survivor
    check's own exchange (the consistency stage) as a share of the round's stages."""
    lines = [
        "| run | " + " | ".join(STAGES) + " | consistency stage: share of the round |",
        "|---|" + "---|" * (len(STAGES) + 1),
    ]
    for name, run in runs["runs"].items():
        rounds = run.get("secagg_stages") or []
        if not rounds:
            continue
        cells, cost = [], {}
        for stage in STAGES:
            done = [r[stage] for r in rounds if stage in r]
            kb = statistics.fmean(d["bytes_down"] + d["bytes_up"] for d in done) / 1e3
            cost[stage] = (kb, statistics.fmean(d["seconds"] for d in done))
            cells.append(f"{kb:.1f} KB, {cost[stage][1]:.2f} s")
        total_kb, total_s = (sum(c[i] for c in cost.values()) for i in (0, 1))
        kb, seconds = cost["consistency"]
        cells.append(f"{kb / total_kb:.2%} of the bytes, {seconds / total_s:.1%} of the time")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_table(costs: dict) -> str:
    lines = [
        "| model | step | seconds | ÷ non-private step | peak MB | ÷ non-private peak |",
        "|---|---|---|---|---|---|",
    ]
    for model, entry in costs.items():
        if model == "settings":
            continue
        plain = entry["plain"]
        for kind, m in entry.items():
            lines.append(
                f"| {model} | {kind} | {m['step_seconds']:.3f} | "
                f"{m['step_seconds'] / plain['step_seconds']:.2f} | {m['peak_mb']:.0f} | "
                f"{m['peak_mb'] / plain['peak_mb']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    runs = json.loads((HERE / "runs.json").read_text())
    plot(runs, HERE / "privacy_utility.png")
    print(utility_table(runs))
    print()
    print(secagg_table(runs))
    print()
    print(stage_table(runs))
    costs_file = HERE / "step_cost.json"
    if costs_file.is_file():
        print()
        print(step_table(json.loads(costs_file.read_text())))


if __name__ == "__main__":
    main()
