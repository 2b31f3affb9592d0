"""``fedtune generate`` and ``fedtune predict``: what a run's model answers, beside the base
model's when asked."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from federated.cli.use_arguments import add_decoding_arguments, add_run_arguments, decoding_of

EXIT_WORDS = ("/exit", "/quit")


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", action="append", help="a prompt (repeat for several)")
    given.add_argument("--prompts", type=Path, help="a text file, one prompt per line")
    given.add_argument(
        "--chat", action="store_true", help="an interactive chat (the model's chat template)"
    )
    parser.add_argument(
        "--base", action="store_true", help="answer with the base model too, side by side"
    )
    add_decoding_arguments(parser, max_new_tokens=128)


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", action="append", help="a text to classify (repeat for several)")
    given.add_argument("--texts", type=Path, help="a text file, one text per line")
    parser.add_argument(
        "--base", action="store_true", help="the base model's class too (its head untrained)"
    )


def _lines(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ValueError(f"{path} holds no line to use")
    return lines


def _models(args: argparse.Namespace, task_wanted: str):
    """The run, its model loaded, and the versions to answer with (name, global model)."""
    from federated.inference.run_folder import open_run, trained_model
    from federated.tasks import TASK_CAUSAL_LM

    run = open_run(args.run_dir, args.server_round)
    is_lm = run.config.task == TASK_CAUSAL_LM
    if is_lm != (task_wanted == TASK_CAUSAL_LM):
        other = "fedtune predict" if not is_lm else "fedtune generate"
        kind = "a causal LM" if is_lm else "a classifier"
        raise ValueError(f"{args.run_dir} trained {kind}: use {other}")
    model = trained_model(run)
    versions = [("tuned", run.model)] + ([("base", model.initial)] if args.base else [])
    return run, model, versions


def generate_command(args: argparse.Namespace) -> int:
    from federated.inference.generation import chat_prompt, generate
    from federated.tasks import TASK_CAUSAL_LM

    decoding = decoding_of(args)
    run, model, versions = _models(args, TASK_CAUSAL_LM)
    precision = run.config.train.precision

    def answers(prompts: list[str], rendered: bool = False) -> dict[str, list[str]]:
        return {
            name: generate(
                model.load(weights),
                model.tokenizer,
                prompts,
                decoding,
                rendered=rendered,
                precision=precision,
            )
            for name, weights in versions
        }

    print(f"# {run.config.model.name}, round {run.round} of {run.folder}", flush=True)
    if not args.chat:
        prompts = args.prompt or _lines(args.prompts)
        found = answers(prompts)
        for i, prompt in enumerate(prompts):
            print(f"\n> {prompt}")
            for name, _ in versions:
                print(f"[{name}] {found[name][i]}")
        return 0
    return _chat(versions, model.tokenizer, answers, chat_prompt, sys.stdin)


def _chat(versions, tokenizer, answers: Callable, chat_prompt: Callable, stdin: TextIO) -> int:
    """Turn after turn until end of input or /exit; each version keeps its own conversation."""
    turns: dict[str, list[tuple[str, str]]] = {name: [] for name, _ in versions}
    print(f"chat: type a message, {EXIT_WORDS[0]} or end of input (Ctrl-D) to stop", flush=True)
    while True:
        print("you> ", end="", flush=True)
        line = stdin.readline()
        message = line.strip()
        if not line or message in EXIT_WORDS:
            print()
            return 0
        if not message:
            continue
        for name, _ in versions:
            rendered = chat_prompt(turns[name], message, tokenizer)
            reply = answers([rendered], rendered=True)[name][0]
            turns[name].append((message, reply))
            print(f"[{name}] {reply}", flush=True)


def predict_command(args: argparse.Namespace) -> int:
    import torch

    from federated.data.corpus import Example
    from federated.inference.evaluation_sets import class_names
    from federated.inference.scoring import class_logits
    from federated.model.workspace import encode_records
    from federated.tasks import TASK_CLASSIFICATION

    run, model, versions = _models(args, TASK_CLASSIFICATION)
    texts = args.text or _lines(args.texts)
    names = class_names(run.config)
    # The encoder needs a label; prediction never reads it.
    encoded = encode_records(run.config, model.tokenizer, [Example(t, label=0) for t in texts])
    print(f"# {run.config.model.name}, round {run.round} of {run.folder}")
    for name, weights in versions:
        logits = class_logits(
            model.load(weights),
            encoded,
            batch_size=run.config.eval.batch_size,
            pad_token_id=model.tokenizer.pad_token_id,
            precision=run.config.train.precision,
        )
        probabilities = torch.softmax(logits, -1)
        for text, p in zip(texts, probabilities, strict=True):
            best = int(p.argmax())
            print(f"[{name}] {names[best]} ({float(p[best]):.2f})  {text}")
    return 0
