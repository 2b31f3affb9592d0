"""The options ``fedtune generate``, ``predict`` and ``evaluate`` share: which run and round,
and how answers are decoded."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from federated.inference.generation import Decoding


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir",
        type=Path,
        help="a run's folder (results/<run>), or one of its checkpoint files",
    )
    parser.add_argument(
        "--round",
        type=int,
        dest="server_round",
        metavar="N",
        help="a round the run kept (server.keep-checkpoints=true); default: its last round",
    )


def add_decoding_arguments(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=max_new_tokens,
        help=f"tokens an answer may have (default {max_new_tokens})",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="0 decodes greedily (the default); above 0 samples at that temperature",
    )
    parser.add_argument(
        "--top-p", type=float, default=1.0, help="nucleus sampling's mass (default 1)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the sampler's seed (default 0)")


def decoding_of(args: argparse.Namespace) -> Decoding:
    from federated.inference.generation import Decoding

    return Decoding(args.max_new_tokens, args.temperature, args.top_p, args.seed)
