"""``fedtune evaluate``: the base and the fine-tuned model measured on the same examples."""

from __future__ import annotations

import argparse
from pathlib import Path

from federated.cli.use_arguments import add_decoding_arguments, add_run_arguments, decoding_of
from federated.inference import BUILT_IN

REPORT_FOLDER = "evaluation"


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument(
        "--data",
        default=BUILT_IN,
        help=f"'{BUILT_IN}' (the run's test set, which no client trained on; default) or a "
        ".jsonl/.csv file with the run's data columns",
    )
    parser.add_argument(
        "--per-partition",
        action="store_true",
        help="each client partition's held-out split too (a file: each value of its group column)",
    )
    parser.add_argument(
        "--max-examples",
        type=int,
        default=64,
        help="at most N examples per set, evenly spread (0: all; default 64)",
    )
    parser.add_argument("--no-base", action="store_true", help="measure the fine-tuned model alone")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="with --per-partition: the nodes' state folder, for each partition's personal "
        "factors (fedsa-lora); default: $FEDTUNE_STATE_DIR, else ~/.local/state/fedtune, where "
        "a simulation's nodes keep them",
    )
    parser.add_argument(
        "--out", type=Path, help="report folder (default: RUN_DIR/evaluation/round-<N>)"
    )
    add_decoding_arguments(parser, max_new_tokens=64)


def evaluate_command(args: argparse.Namespace) -> int:
    from federated.inference.evaluation_report import evaluate_run, report_table, write_report
    from federated.inference.evaluation_sets import evaluation_sets
    from federated.inference.run_folder import open_run
    from federated.node_state import default_state_root

    if args.max_examples < 0:
        raise ValueError(f"--max-examples {args.max_examples}: must be 0 (all) or more")
    decoding = decoding_of(args)
    run = open_run(args.run_dir, args.server_round)
    what, sets = evaluation_sets(
        run, args.data, per_partition=args.per_partition, max_examples=args.max_examples
    )
    state_root = args.state_dir or default_state_root()
    found = evaluate_run(run, sets, decoding, base=not args.no_base, state_root=state_root)
    out = args.out or run.folder / REPORT_FOLDER / f"round-{run.round}"
    report = write_report(run, what, sets, found, decoding, out)
    print(f"# {run.config.model.name}, round {run.round} of {run.folder}, on {what}")
    print(report_table(report))
    print(f"# wrote {out}")
    return 0
