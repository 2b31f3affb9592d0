"""fedtune generate, predict and evaluate on real run folders, and eval.generate in a run.

The runs are whole in-process federations (the server's and the clients' real handlers): a
tiny-llama LoRA run that keeps every round and scores its answers in its last round, and a
zeroth-order tiny-bert classifier with a hybrid head on sensitive entries (its mask read back
from the folder). Loading is checked where it can fail silently: the evaluation of the run's
last model and of its base must give the run's own test numbers, on the same examples.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from federated.cli.main import main
from federated.inference.run_folder import open_run
from federated.inference.text_metrics import exact_match, rouge_l
from tests.finished_runs import LORA_RUN as LM
from tests.in_process import run_federation

ZO_CLASSIFIER = {
    "mode": "zo",
    "strategy.name": "fedkseed",
    "model.name": "tiny-bert",
    "data.name": "wordnet",
    "data.num-classes": 4,
    "zo.hybrid": "head",
    "zo.hybrid-lr": 0.1,
    "zo.params": "sensitive",
    "zo.sparse-fraction": 0.01,
    "zo.calibration-examples": 16,
    "zo.pool-size": 32,
    "num-server-rounds": 1,
    "eval.max-examples": 12,
}


@pytest.fixture(scope="module")
def fedsa_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two clients keeping their personal factors in one state folder."""
    state = tmp_path_factory.mktemp("node-state")
    run = {**LM, "strategy.name": "fedsa-lora", "strategy.fraction-evaluate": 1.0}
    nodes = {p: {"state-dir": str(state)} for p in range(2)}
    folder = run_federation(tmp_path_factory.mktemp("use"), "fedsa", run, 2, node_configs=nodes)
    return folder, state


@pytest.fixture(scope="module")
def lm_run(lora_run: Path) -> Path:
    return lora_run


@pytest.fixture(scope="module")
def zo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_federation(tmp_path_factory.mktemp("use"), "zo", ZO_CLASSIFIER, clients=2)


def _rounds(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _fedtune(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_last_round_scores_its_answers_as_written(lm_run: Path) -> None:
    rounds = _rounds(lm_run)
    assert "test_rouge_l" not in rounds[1]
    answers = [json.loads(x) for x in (lm_run / "generations.jsonl").read_text().splitlines()]
    assert len(answers) == LM["eval.max-examples"]
    scored = [(a["answer"], a["reference"]) for a in answers]
    assert rounds[-1]["test_rouge_l"] == pytest.approx(
        sum(rouge_l(*p) for p in scored) / len(scored)
    )
    assert rounds[-1]["test_exact_match"] == sum(exact_match(*p) for p in scored) / len(scored)


def test_evaluate_gives_the_runs_own_test_numbers_for_the_base_and_the_last_model(
    lm_run: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    code, out, _ = _fedtune(
        capsys,
        "evaluate",
        lm_run,
        "--per-partition",
        "--max-examples",
        8,
        "--max-new-tokens",
        6,
        "--out",
        tmp_path,
    )
    assert code == 0 and "partition 1" in out
    report = json.loads((tmp_path / "evaluation.json").read_text())
    rounds = _rounds(lm_run)
    overall = report["sets"][0]
    assert overall["tuned"]["loss"] == pytest.approx(rounds[-1]["test_loss"], rel=1e-6)
    assert overall["base"]["loss"] == pytest.approx(rounds[0]["test_loss"], rel=1e-6)
    assert overall["tuned"]["rouge_l"] == pytest.approx(rounds[-1]["test_rouge_l"])
    assert [s["name"] for s in report["sets"]] == ["all", "partition 0", "partition 1"]
    lines = (tmp_path / "generations.jsonl").read_text().splitlines()
    assert {"prompt", "reference", "base", "tuned"} <= set(json.loads(lines[0]))


@pytest.mark.slow  # a run of its own
def test_a_personalised_run_is_measured_with_each_partitions_own_factors(
    fedsa_run: tuple[Path, Path], capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    folder, state = fedsa_run
    code, out, _ = _fedtune(
        capsys,
        "evaluate",
        folder,
        "--per-partition",
        "--state-dir",
        state,
        "--no-base",
        "--max-examples",
        LM["eval.max-examples"],
        "--max-new-tokens",
        2,
        "--out",
        tmp_path,
    )
    assert code == 0 and "personal" in out
    partitions = json.loads((tmp_path / "evaluation.json").read_text())["sets"][1:]
    # Each client evaluated as many examples of its held-out split: the round's held-out
    # numbers are the mean of the two partitions' own (personal) and global models'.
    last = _rounds(folder)[-1]
    personal = [p["personal"]["loss"] for p in partitions]
    assert sum(personal) / 2 == pytest.approx(last["held_out_loss"], rel=1e-6)
    tuned = [p["tuned"]["loss"] for p in partitions]
    assert sum(tuned) / 2 == pytest.approx(last["held_out_global_loss"], rel=1e-6)
    assert personal != tuned


def test_evaluate_reads_a_file_and_a_kept_round(
    lm_run: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    data = tmp_path / "questions.jsonl"
    rows = [{"text": "Who are you?", "target": "I am a bot."}, {"text": "Hi", "target": "Hello"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, _ = _fedtune(
        capsys,
        "evaluate",
        lm_run,
        "--round",
        1,
        "--data",
        data,
        "--no-base",
        "--max-new-tokens",
        4,
    )
    assert code == 0 and "base" not in out.split("\n", 2)[1]
    report = json.loads((lm_run / "evaluation" / "round-1" / "evaluation.json").read_text())
    assert report["round"] == 1 and report["sets"][0]["examples"] == 2
    assert open_run(lm_run, 1).model.trainable.keys() == open_run(lm_run).model.trainable.keys()


def test_generate_answers_prompts_beside_the_base_and_chats_turn_after_turn(
    lm_run: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = _fedtune(
        capsys,
        "generate",
        lm_run,
        "--prompt",
        "What is AI?",
        "--prompt",
        "Hi",
        "--base",
        "--max-new-tokens",
        4,
    )
    assert code == 0
    assert out.count("[tuned]") == 2 and out.count("[base]") == 2 and "> Hi" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n\nWhat now?\n/exit\nnever read\n"))
    code, out, _ = _fedtune(capsys, "generate", lm_run, "--chat", "--max-new-tokens", 3)
    assert code == 0 and out.count("[tuned]") == 2 and out.count("you> ") == 4


def test_a_zeroth_order_classifier_is_measured_and_predicts_by_class_name(
    zo_run: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    code, out, _ = _fedtune(
        capsys,
        "evaluate",
        zo_run,
        "--max-examples",
        ZO_CLASSIFIER["eval.max-examples"],
        "--out",
        tmp_path,
    )
    assert code == 0 and "macro_f1" in out
    report = json.loads((tmp_path / "evaluation.json").read_text())
    rounds = _rounds(zo_run)
    tuned, base = report["sets"][0]["tuned"], report["sets"][0]["base"]
    assert tuned["loss"] == pytest.approx(rounds[-1]["test_loss"], rel=1e-6)
    assert tuned["accuracy"] == pytest.approx(rounds[-1]["test_accuracy"])
    assert base["loss"] == pytest.approx(rounds[0]["test_loss"], rel=1e-6)
    matrix = report["confusion"]["tuned"]["matrix"]
    assert sum(map(sum, matrix)) == ZO_CLASSIFIER["eval.max-examples"] and len(matrix) == 4
    assert (tmp_path / "confusion-tuned.png").is_file()
    code, out, _ = _fedtune(capsys, "predict", zo_run, "--text", "a dog", "--text", "to run")
    assert code == 0 and out.count("[tuned]") == 2


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["generate", "{zo}", "--prompt", "x"], "trained a classifier: use fedtune predict"),
        (["predict", "{lm}", "--text", "x"], "trained a causal LM: use fedtune generate"),
        (["evaluate", "{zo}", "--round", "3"], "it keeps only its last"),
        (["evaluate", "{lm}", "--round", "7"], "it keeps rounds 1, 2"),
        (["evaluate", "{lm}", "--data", "missing.jsonl"], "no such file"),
        (["evaluate", "{lm}", "--data", "built-in", "--max-examples", "-1"], "must be 0"),
        (["evaluate", "{lm}/metrics.jsonl"], "a fedtune run folder"),
    ],
)
def test_a_wrong_request_gets_one_line(
    argv: list[str], says: str, lm_run: Path, zo_run: Path, capsys: pytest.CaptureFixture
) -> None:
    code, _, err = _fedtune(capsys, *(a.format(lm=lm_run, zo=zo_run) for a in argv))
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_eval_generate_is_refused_for_a_classifier() -> None:
    from federated.config import ConfigError, parse_run_config

    with pytest.raises(ConfigError, match="'eval.generate' = true: answers are generated"):
        parse_run_config({"model.name": "tiny-bert", "data.name": "wordnet", "eval.generate": True})
