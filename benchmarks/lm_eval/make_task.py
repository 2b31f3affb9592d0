"""The examples no client of a run trained on, as a JSONL file for lm-evaluation-harness.

The server's test set is drawn from the run's corpus before partitioning, with the run's seed
and data.test-fraction (`federated.model.workspace.server_test_indices`), so these prompts and
answers were held out of every client's training. Each line is ``{"prompt", "answer", "group"}``:
the user's message (lm-eval renders it with the chat template under --apply_chat_template, as
fedtune renders it at training), the reference answer and the example's group.

    PYTHONPATH=. python -m benchmarks.lm_eval.make_task RUN_DIR   # chatterbot_heldout.jsonl here
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from federated.inference.run_folder import open_run
from federated.model.workspace import corpus_for, server_test_indices
from federated.tasks import TASK_CAUSAL_LM

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "chatterbot_heldout.jsonl"


def heldout_lines(run_dir: Path) -> list[str]:
    """One JSON line per example of the run's server test set, in the set's order."""
    config = open_run(run_dir).config
    if config.task != TASK_CAUSAL_LM:
        raise SystemExit(f"{run_dir}: task {config.task!r}; the lm-eval task needs a causal LM run")
    examples = corpus_for(config).examples
    return [
        json.dumps({"prompt": e.text, "answer": e.target, "group": e.group}, ensure_ascii=False)
        for e in (examples[i] for i in server_test_indices(config))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a fedtune run folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSONL file to write")
    args = parser.parse_args()
    lines = heldout_lines(args.run_dir)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} held-out examples in {args.out}")


if __name__ == "__main__":
    main()
