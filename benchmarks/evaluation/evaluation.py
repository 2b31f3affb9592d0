"""What the quick start's model learned, and what the WordNet classifiers learned, measured as
``fedtune evaluate`` measures them: the base and the fine-tuned model on the same held-out
examples with the same greedy decoding.

- SmolLM2-135M-Instruct, the quick start's job (10 clients, one chatterbot category each, 3
  rounds, LoRA r=8 on q and v, 3 of the 10 evaluating): loss, Rouge-L and exact match on the
  server's test set (chatterbot answers no client trained on), and a few answers side by side.
- MiniLM-L6 on WordNet (8 largest categories, 400 definitions each, Dirichlet 0.3 over 10
  clients, 5 rounds of 8 local steps at lr 3e-3), with fedavg and with fedsa-lora: accuracy and
  macro-F1 on the test set and on each partition's held-out split, fedsa-lora's partitions also
  with their own B factors.

Runs go through the real ServerApp and ClientApps in one process (``tests.in_process``: every
message crosses Flower's wire format), as the quick start runs them on the simulation engine.

    PYTHONPATH=. python -m benchmarks.evaluation.evaluation   # results.json, evaluation.png
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save
from federated.inference import BUILT_IN
from federated.inference.evaluation_report import evaluate_run
from federated.inference.evaluation_sets import evaluation_sets
from federated.inference.generation import Decoding
from federated.inference.run_folder import open_run
from tests.in_process import run_federation

HERE = Path(__file__).resolve().parent
QUICK_START = {"num-server-rounds": 3, "strategy.fraction-evaluate": 0.3, "seed": 0}
# As the strategies benchmark trains MiniLM on WordNet (benchmarks/strategies).
WORDNET = {
    "model.name": "minilm-l6",
    "data.name": "wordnet",
    "data.num-classes": 8,
    "data.max-per-class": 400,
    "data.partitioner": "dirichlet",
    "data.dirichlet-alpha": 0.3,
    "model.max-length": 32,
    "train.lr": 0.003,
    "train.local-steps": 8,
    "train.batch-size": 16,
    "num-server-rounds": 5,
    "strategy.fraction-evaluate": 0.0,
    "seed": 0,
}
CLIENTS = 10
DECODING = Decoding(max_new_tokens=64, seed=0)
SHOWN = 6  # answers shown side by side


def _measure(folder: Path, per_partition: bool, state: Path | None) -> dict:
    run = open_run(folder)
    _, sets = evaluation_sets(run, BUILT_IN, per_partition=per_partition, max_examples=0)
    started = time.perf_counter()
    found = evaluate_run(run, sets, DECODING, state_root=state)
    overall, every = sets[0], found["all"]
    step = max(1, len(overall.examples) // SHOWN)
    shown = range(0, step * SHOWN, step) if every["tuned"].answers else ()
    return {
        "seconds": time.perf_counter() - started,
        "sets": [
            {"name": s.name, "examples": len(s.examples)}
            | {version: scores.metrics for version, scores in found[s.name].items()}
            for s in sets
        ],
        "answers": [
            {"prompt": overall.examples[i].text, "reference": overall.examples[i].target}
            | {version: scores.answers[i] for version, scores in every.items()}
            for i in shown
        ],
    }


def measure(out: Path, state: Path, kept: dict) -> dict:
    """Every planned run, but those ``kept`` (an earlier results.json) measured with the same
    config and decoding."""
    results: dict = {"decoding": asdict(DECODING), "runs": {}}
    nodes = {p: {"state-dir": str(state)} for p in range(CLIENTS)}
    planned = {
        "quick-start": (QUICK_START, False),
        "wordnet-fedavg": (WORDNET, True),
        "wordnet-fedsa-lora": ({**WORDNET, "strategy.name": "fedsa-lora"}, True),
    }
    for name, (config, per_partition) in planned.items():
        earlier = kept.get("runs", {}).get(name)
        if kept.get("decoding") == results["decoding"] and earlier and earlier["config"] == config:
            results["runs"][name] = earlier
            continue
        started = time.perf_counter()
        folder = run_federation(out, name, config, CLIENTS, node_configs=nodes)
        trained = time.perf_counter() - started
        results["runs"][name] = {
            "config": config,
            "train_seconds": trained,
            **_measure(folder, per_partition, state),
        }
        print(f"{name}: trained in {trained:.0f} s", flush=True)
    return results


def plot(results: dict, path: Path) -> None:
    lm = results["runs"]["quick-start"]["sets"][0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["rouge_l", "exact_match"]
    x = range(len(names))
    left.bar([i - 0.2 for i in x], [lm["base"][n] for n in names], 0.4, label="base")
    left.bar([i + 0.2 for i in x], [lm["tuned"][n] for n in names], 0.4, label="fine-tuned")
    left.set_xticks(list(x), ["Rouge-L", "exact match"])
    left.set_title(f"SmolLM2-135M, chatterbot test set ({lm['examples']} answers)", fontsize=10)
    left.legend()
    left.grid(axis="y", alpha=0.3)
    labels, base, tuned, personal = [], [], [], []
    for run in ("wordnet-fedavg", "wordnet-fedsa-lora"):
        for s in results["runs"][run]["sets"]:
            labels.append(f"{run.removeprefix('wordnet-')} {s['name'].replace('partition ', 'p')}")
            base.append(s["base"]["macro_f1"])
            tuned.append(s["tuned"]["macro_f1"])
            personal.append(s.get("personal", {}).get("macro_f1", float("nan")))
    x = range(len(labels))
    right.bar([i - 0.27 for i in x], base, 0.27, label="base (untrained head)")
    right.bar(list(x), tuned, 0.27, label="fine-tuned, global")
    right.bar([i + 0.27 for i in x], personal, 0.27, label="fine-tuned, own B (fedsa-lora)")
    right.set_xticks(list(x), labels, rotation=70, fontsize=7)
    right.set_ylabel("macro-F1")
    right.set_title(
        "MiniLM-L6, WordNet 8 classes, Dirichlet 0.3: all, then each partition", fontsize=10
    )
    right.legend(fontsize=7)
    right.grid(axis="y", alpha=0.3)
    save(fig, path)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out, saved = HERE / "runs", HERE / "results.json"
    shutil.rmtree(out, ignore_errors=True)
    kept = json.loads(saved.read_text()) if saved.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="fedtune-node-state-") as state:
        results = measure(out, Path(state), kept)
    shutil.rmtree(out)
    saved.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, HERE / "evaluation.png")


if __name__ == "__main__":
    main()
