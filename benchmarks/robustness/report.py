"""Plot and tabulate the robustness benchmark from ``results.json``.

PYTHONPATH=. python -m benchmarks.robustness.report   # writes robustness.png, prints the table
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save
from benchmarks.robustness.run import ATTACKS, METHODS

HERE = Path(__file__).resolve().parent


def plot(results: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    width = 0.8 / len(ATTACKS)
    for i, attack in enumerate(ATTACKS):
        losses = [results["runs"][f"{attack}-{m}"]["test_loss"][-1] for m in METHODS]
        ax.bar([x + i * width for x in range(len(METHODS))], losses, width, label=attack)
    ax.set_xticks([x + width * (len(ATTACKS) - 1) / 2 for x in range(len(METHODS))], METHODS)
    ax.set_ylabel("final test loss")
    ax.set_title("MiniLM-L6, WordNet 8 classes, 10 clients, 3 hostile")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    save(fig, path)


def table(results: dict) -> str:
    lines = [
        "| attack | " + " | ".join(METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for attack in ATTACKS:
        cells = []
        for method in METHODS:
            run = results["runs"][f"{attack}-{method}"]
            cells.append(f"{run['test_loss'][-1]:.3f} / {run['test_accuracy'][-1]:.3f}")
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    results = json.loads((HERE / "results.json").read_text())
    plot(results, HERE / "robustness.png")
    print("final test loss / accuracy")
    print(table(results))
    for name, run in results["runs"].items():
        if run["rejections"]:
            print(name, run["accepted_per_round"], run["rejections"])


if __name__ == "__main__":
    main()
