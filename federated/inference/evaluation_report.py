"""``fedtune evaluate``: the base and the fine-tuned model on the same examples, overall and per
partition, with the same decoding; written as ``evaluation.json``, every answer in
``generations.jsonl``, and a classifier's confusion matrices as pictures."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from federated.inference.class_metrics import plot_confusion
from federated.inference.evaluation_sets import EvaluationSet, class_names
from federated.inference.generation import Decoding
from federated.inference.run_folder import TrainedRun, trained_model
from federated.inference.scoring import Scores, score
from federated.personal_factors import PersonalFactors
from federated.protocol.global_model import GlobalModel

REPORT_FILE = "evaluation.json"
GENERATIONS_FILE = "generations.jsonl"


def evaluate_run(
    run: TrainedRun,
    sets: list[EvaluationSet],
    decoding: Decoding,
    *,
    base: bool = True,
    state_root: Path | None = None,
) -> dict[str, dict[str, Scores]]:
    """Each set's scores: {set name: {"base": ..., "tuned": ..., "personal": ...}}.

    The base model is the run's before any round: the pretrained weights (with the run's seeded
    head, for a classifier, which no round has trained). "personal" is a partition's own model
    where its node kept personal factors (fedsa-lora) under ``state_root``: the global model
    with them in place, as the client itself evaluates."""
    model = trained_model(run)
    classes = len(class_names(run.config))
    versions: list[tuple[str, GlobalModel]] = [("base", model.initial)] if base else []
    versions.append(("tuned", run.model))
    found: dict[str, dict[str, Scores]] = {s.name: {} for s in sets}

    def measure(version: str, weights: GlobalModel, chosen: list[EvaluationSet]) -> None:
        module = model.load(weights)
        for s in chosen:
            found[s.name][version] = score(
                module, model.tokenizer, run.config, s.examples, decoding, classes=classes
            )

    for version, weights in versions:
        measure(version, weights, sets)
    for s in sets:
        personal = _personal_model(run, s.partition, state_root)
        if personal is not None:
            measure("personal", personal, [s])
    return found


def _personal_model(
    run: TrainedRun, partition: int | None, state_root: Path | None
) -> GlobalModel | None:
    """The partition's personalised model at the run's round, if its node kept factors."""
    if partition is None or state_root is None or run.run_key is None or run.config.mode == "zo":
        return None
    store = PersonalFactors(state_root, run.run_key, (partition, run.num_partitions))
    _, factors = store.before(run.round + 1)
    if not factors:
        return None
    return GlobalModel({**run.model.trainable, **factors}, run.model.base_delta)


def write_report(
    run: TrainedRun,
    what: str,
    sets: list[EvaluationSet],
    found: dict[str, dict[str, Scores]],
    decoding: Decoding,
    out: Path,
) -> dict[str, Any]:
    """The report's files in ``out``; the report."""
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "run": str(run.folder),
        "round": run.round,
        "model": run.config.model.name,
        "data": what,
        "decoding": asdict(decoding),
        "sets": [
            {
                "name": s.name,
                "examples": len(s.examples),
                **{version: scores.metrics for version, scores in found[s.name].items()},
            }
            for s in sets
        ],
    }
    overall, everything = sets[0], found[sets[0].name]
    if any(scores.answers for scores in everything.values()):
        lines = [
            {
                "prompt": e.text,
                "reference": e.target,
                **{version: scores.answers[i] for version, scores in everything.items()},
            }
            for i, e in enumerate(overall.examples)
        ]
        (out / GENERATIONS_FILE).write_text("".join(json.dumps(x) + "\n" for x in lines))
        report["examples"] = lines[:5]
    names = class_names(run.config)
    for version, scores in everything.items():
        if scores.confusion is not None:
            title = f"{run.config.model.name} ({version}), round {run.round}"
            path = plot_confusion(scores.confusion, names, title, out / f"confusion-{version}.png")
            report.setdefault("confusion", {})[version] = {
                "matrix": scores.confusion.tolist(),
                "picture": str(path),
            }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def report_table(report: dict[str, Any]) -> str:
    """The report's measures as a plain table, one row per set and model."""
    keys = [
        k
        for k in ("loss", "perplexity", "rouge_l", "exact_match", "accuracy", "macro_f1")
        if any(k in row.get("tuned", {}) for row in report["sets"])
    ]
    header = f"{'set':<14}{'examples':>9}  {'model':<8}" + "".join(f"{k:>13}" for k in keys)
    rows = [header]
    for row in report["sets"]:
        for i, version in enumerate(v for v in ("base", "tuned", "personal") if v in row):
            first = f"{row['name']:<14}{row['examples']:>9}" if i == 0 else " " * 23
            rows.append(
                f"{first}  {version:<6}" + "".join(f"{row[version][k]:>13.4f}" for k in keys)
            )
    return "\n".join(rows)
