"""Plot and tabulate the zeroth-order benchmark: ``runs.json`` and ``costs.json``.

python -m benchmarks.zo.report    # writes curves.png and bytes.png, prints the markdown tables
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save
from benchmarks.zo.run import METHODS

HERE = Path(__file__).resolve().parent


def plot_curves(runs: dict, path: Path) -> None:
    models = list(runs["runs"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5))
    for ax, model in zip(axes, models, strict=True):
        for method, run in runs["runs"][model].items():
            accuracy = run["test_accuracy"]
            values = accuracy if accuracy[0] is not None else run["test_loss"]
            ax.plot(range(len(values)), values, marker="o", label=method)
        metric = "accuracy" if run["test_accuracy"][0] is not None else "loss"
        ax.set_title(f"{model}: server test {metric}")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, path)


def plot_bytes(runs: dict, path: Path) -> None:
    models = list(runs["runs"])
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5))
    for ax, model in zip(axes, models, strict=True):
        methods = list(runs["runs"][model])
        up = [statistics.fmean(runs["runs"][model][m]["bytes_up_per_client"]) for m in methods]
        down = [statistics.fmean(runs["runs"][model][m]["bytes_down_per_client"]) for m in methods]
        positions = range(len(methods))
        ax.bar([p - 0.2 for p in positions], up, width=0.4, label="up")
        ax.bar([p + 0.2 for p in positions], down, width=0.4, label="down")
        ax.set_xticks(list(positions), methods, rotation=20, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("bytes per sampled client per round (log)")
        ax.set_title(model)
        ax.legend()
    save(fig, path)


def plot_sweep(sweep: dict, path: Path) -> None:
    """Test loss per round at each rate; a diverging curve leaves the top of its panel."""
    panels = [(m, method) for m, methods in sweep.items() if m != "settings" for method in methods]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.8))
    for ax, (model, method) in zip(axes, panels, strict=True):
        rates = sweep[model][method]
        start = next(iter(rates.values()))[0]
        lowest = min(min(losses) for losses in rates.values())
        span = max(start - lowest, 0.01)
        for lr, losses in rates.items():
            ax.plot(range(len(losses)), losses, marker="o", label=f"lr {lr}")
        ax.set_ylim(lowest - 0.25 * span, start + span)
        ax.set_title(f"{model}\n{method}", fontsize=9)
        ax.set_xlabel("round (one client's local steps)")
        ax.set_ylabel("server test loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save(fig, path, dpi=110)


def runs_table(runs: dict) -> str:
    lines = [
        "| model | method | up / client / round | down / client / round | run total / client "
        "| first → last test loss | first → last accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, methods in runs["runs"].items():
        for method, run in methods.items():
            up = statistics.fmean(run["bytes_up_per_client"])
            down = statistics.fmean(run["bytes_down_per_client"])
            loss = f"{run['test_loss'][0]:.3f} → {run['test_loss'][-1]:.3f}"
            acc = run["test_accuracy"]
            acc_text = "–" if acc[0] is None else f"{acc[0]:.3f} → {acc[-1]:.3f}"
            lines.append(
                f"| {model} | {method} | {_bytes(up)} | {_bytes(down)} | "
                f"{_bytes(run['total_bytes_per_client'])} | {loss} | {acc_text} |"
            )
    return "\n".join(lines)


def costs_table(costs: dict) -> str:
    lines = [
        "| model | client | trained parameters | step ÷ forward | peak MB (phase) "
        "| peak ÷ inference | peak ÷ LoRA client | replay of K seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, entry in costs.items():
        if model == "settings":
            continue
        inference, lora = entry["inference"], entry["lora-step"]
        lines.append(
            f"| {model} | inference only | – | 1 (forward {inference['forward_seconds']:.3f} s) "
            f"| {inference['peak_mb']:.0f} | 1.00 | "
            f"{inference['peak_mb'] / lora['peak_mb']:.2f} | – |"
        )
        for name, m in entry.items():
            if name == "inference":
                continue
            replay = m.get("replay")
            replay_text = "–"
            if replay:
                replay_text = f"{replay['seconds_for_pool']:.1f} s"
                if replay["extrapolated"]:
                    replay_text += f" (from {replay['seeds_timed']} seeds)"
            lines.append(
                f"| {model} | {name} | {m['trained_parameters']:,} | "
                f"{m['step_seconds'] / m['forward_seconds']:.2f} | {m['peak_mb']:.0f} | "
                f"{m['peak_mb'] / inference['peak_mb']:.2f} | {m['peak_mb'] / lora['peak_mb']:.2f} "
                f"| {replay_text} |"
            )
    return "\n".join(lines)


def sweep_table(sweep: dict) -> str:
    """Per ZO method, the test loss after the sweep's last round at each rate; * marks run.py's."""
    limit = sweep["settings"]["diverged"]
    lines = [
        "| model | method | learning rate: initial → final test loss |",
        "|---|---|---|",
    ]
    for model, methods in sweep.items():
        if model == "settings":
            continue
        for method, rates in methods.items():
            chosen = f"{METHODS[model][method]['zo.lr']:g}"
            cells = []
            for lr, losses in rates.items():
                blown = not math.isfinite(losses[-1]) or losses[-1] > losses[0] + limit
                ended = f" (diverged by round {len(losses) - 1})" if blown else ""
                mark = "*" if lr == chosen else ""
                cells.append(f"{lr}{mark}: {losses[0]:.3f} → {losses[-1]:.3f}{ended}")
            lines.append(f"| {model} | {method} | " + "; ".join(cells) + " |")
    return "\n".join(lines)


def _bytes(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def main() -> None:
    runs = json.loads((HERE / "runs.json").read_text())
    costs = json.loads((HERE / "costs.json").read_text())
    plot_curves(runs, HERE / "curves.png")
    plot_bytes(runs, HERE / "bytes.png")
    print(runs_table(runs))
    print()
    print(costs_table(costs))
    sweep_file = HERE / "lr_sweep.json"
    if sweep_file.is_file():
        sweep = json.loads(sweep_file.read_text())
        plot_sweep(sweep, HERE / "lr_sweep.png")
        print()
        print(sweep_table(sweep))


if __name__ == "__main__":
    main()
