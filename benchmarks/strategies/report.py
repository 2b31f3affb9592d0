"""Plot and tabulate ``results.json`` of the strategies benchmark.

python -m benchmarks.strategies.report    # writes accuracy.png, prints the markdown table
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save

HERE = Path(__file__).resolve().parent
CEILING = "centralized"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _curve(runs: list[dict]) -> tuple[list[float], list[float]]:
    by_round = list(zip(*(run["accuracy"] for run in runs), strict=True))
    stats = [_mean_std(list(values)) for values in by_round]
    return [m for m, _ in stats], [s for _, s in stats]


def _personalised(runs: list[dict]) -> bool:
    """Runs that every client evaluated: judged on held-out data, not in the global ranking."""
    return "held_out_accuracy" in runs[0]


def plot(results: dict, path: Path) -> None:
    alphas = list(results["runs"])
    fig, axes = plt.subplots(1, len(alphas), figsize=(6 * len(alphas), 4.5), sharey=True)
    for ax, alpha in zip(axes, alphas, strict=True):
        for name, runs in sorted(results["runs"][alpha].items()):
            if _personalised(runs):
                continue
            mean, std = _curve(runs)
            rounds = range(len(mean))
            style = {"linestyle": "--", "color": "black"} if name == CEILING else {}
            (line,) = ax.plot(rounds, mean, label=name, **style)
            lower = [m - s for m, s in zip(mean, std, strict=True)]
            upper = [m + s for m, s in zip(mean, std, strict=True)]
            ax.fill_between(rounds, lower, upper, alpha=0.12, color=line.get_color())
        ax.set_title(f"MiniLM-L6 + LoRA, WordNet 8 classes, Dirichlet {alpha}")
        ax.set_xlabel("round (centralized: the same number of steps)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (mean ± std over seeds)")
    axes[-1].legend(fontsize=8, loc="lower right")
    save(fig, path)


def table(results: dict) -> str:
    lines = []
    for alpha, by_strategy in results["runs"].items():
        lines += [
            f"\n**Dirichlet {alpha}**\n",
            "| strategy | seeds | final accuracy | best round accuracy | up / client / round | "
            "down / client / round | aggregation |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = []
        for name, runs in by_strategy.items():
            if _personalised(runs):
                continue
            final = _mean_std([run["accuracy"][-1] for run in runs])
            best = _mean_std([max(run["accuracy"]) for run in runs])
            if name == CEILING:
                cells = [f"{name} (ceiling)", str(len(runs)), f"{final[0]:.3f} ± {final[1]:.3f}"]
                cells.append(f"{best[0]:.3f}")
                rows.append((final[0], "| " + " | ".join(cells + ["–"] * 3) + " |"))
                continue
            up = statistics.fmean(v for run in runs for v in run["bytes_up_per_client"])
            down = statistics.fmean(v for run in runs for v in run["bytes_down_per_client"])
            agg = statistics.fmean(v for run in runs for v in run["aggregation_seconds"])
            cells = [
                name,
                str(len(runs)),
                f"{final[0]:.3f} ± {final[1]:.3f}",
                f"{best[0]:.3f}",
                f"{up / 1e3:.0f} KB",
                f"{down / 1e3:.0f} KB",
                f"{agg * 1e3:.1f} ms",
            ]
            rows.append((final[0], "| " + " | ".join(cells) + " |"))
        lines += [row for _, row in sorted(rows, reverse=True)]
    return "\n".join(lines)


def personalised_table(results: dict) -> str:
    """Final held-out accuracy over all clients: each client's own model against the global one."""
    lines = [
        "| Dirichlet alpha | strategy | seeds | personalised (own B) | global (Ā, mean B) |",
        "|---|---|---|---|---|",
    ]
    for alpha, by_strategy in results["runs"].items():
        for name, runs in by_strategy.items():
            if not _personalised(runs):
                continue
            own = _mean_std([run["held_out_accuracy"][-1] for run in runs])
            shared = _mean_std([run["held_out_global_accuracy"][-1] for run in runs])
            lines.append(
                f"| {alpha.removeprefix('alpha=')} | {name} | {len(runs)} | "
                f"{own[0]:.3f} ± {own[1]:.3f} | {shared[0]:.3f} ± {shared[1]:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    results = json.loads((HERE / "results.json").read_text())
    plot(results, HERE / "accuracy.png")
    print(table(results))
    print()
    print(personalised_table(results))


if __name__ == "__main__":
    main()
