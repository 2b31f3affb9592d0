"""Plot and tabulate ``learns.json``: the headline metric per round, and bytes per client.

python -m benchmarks.zo.learns_report    # writes learns.png, prints the markdown table
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save
from benchmarks.zo.learns import SETUPS

HERE = Path(__file__).resolve().parent


def _setup(name: str) -> str:
    return next(
        setup for setup in sorted(SETUPS, key=len, reverse=True) if name.startswith(setup + "-")
    )


def _headline(run: dict) -> tuple[str, list[float]]:
    if run["test_accuracy"][0] is not None:
        return "accuracy", run["test_accuracy"]
    return "loss", run["test_loss"]


def plot(results: dict, path: Path) -> None:
    """Per set-up (``learns.SETUPS``), the headline metric per round; then every run's bytes
    per client."""
    setups = list(dict.fromkeys(_setup(name) for name in results["runs"]))
    fig, axes = plt.subplots(1, len(setups) + 1, figsize=(6 * (len(setups) + 1), 4.5))
    for ax, setup in zip(axes, setups, strict=False):
        for name, run in results["runs"].items():
            if _setup(name) == setup:
                metric, values = _headline(run)
                ax.plot(
                    range(len(values)), values, marker="o", label=name.removeprefix(setup + "-")
                )
        if metric == "loss":  # a diverged run leaves the top of the panel
            ax.set_ylim(top=values[0] + 0.5)
        ax.set_title(f"{setup}: server test {metric} (equal client compute)", fontsize=9)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    names = list(results["runs"])
    sizes = axes[-1]
    sizes.barh(range(len(names)), [results["runs"][n]["total_bytes_per_client"] for n in names])
    sizes.set_yticks(range(len(names)), names, fontsize=7)
    sizes.set_xscale("log")
    sizes.set_xlabel("bytes per client over the run (up + down, log)")
    save(fig, path)


def table(results: dict) -> str:
    rows = [
        "| run | steps | final | up / round | down / round | total per client |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in results["runs"].items():
        metric, values = _headline(run)
        steps = results["settings"][name]["config"]["train.local-steps"]
        up = statistics.fmean(run["bytes_up_per_client"])
        down = statistics.fmean(run["bytes_down_per_client"])
        rows.append(
            f"| {name} | {steps} | {metric} {values[-1]:.3f} | {up / 1e3:.1f} KB | "
            f"{down / 1e3:.1f} KB | {run['total_bytes_per_client'] / 1e3:.1f} KB |"
        )
    return "\n".join(rows)


def main() -> None:
    results = json.loads((HERE / "learns.json").read_text())
    plot(results, HERE / "learns.png")
    print(table(results))


if __name__ == "__main__":
    main()
