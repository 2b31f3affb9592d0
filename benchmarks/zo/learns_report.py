"""Plot and tabulate ``learns.json``: the headline metric per round, and bytes per client.

python -m benchmarks.zo.learns_report    # writes learns.png, prints the markdown table
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save

HERE = Path(__file__).resolve().parent


def _headline(run: dict) -> tuple[str, list[float]]:
    if run["test_accuracy"][0] is not None:
        return "accuracy", run["test_accuracy"]
    return "loss", run["test_loss"]


def plot(results: dict, path: Path) -> None:
    fig, (curves, sizes) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = list(results["runs"])
    for name in names:
        metric, values = _headline(results["runs"][name])
        curves.plot(range(len(values)), values, marker="o", label=name)
    curves.set_title(f"server test {metric} per round (equal client compute)")
    curves.set_xlabel("round")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=7)
    totals = [results["runs"][n]["total_bytes_per_client"] for n in names]
    sizes.barh(range(len(names)), totals)
    sizes.set_yticks(range(len(names)), names, fontsize=7)
    sizes.set_xscale("log")
    sizes.set_xlabel("bytes per client over the run (up + down, log)")
    save(fig, path)


def table(results: dict) -> str:
    rows = ["| run | steps | final | up / round | down / round | total per client |",
            "|---|---|---|---|---|---|"]  # fmt: skip
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
