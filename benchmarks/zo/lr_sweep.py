"""How large a zeroth-order learning rate each setting of ``run.py`` tolerates.

A ZO step moves the weights by lr·g·z with ‖z‖² about the number of trained weights, so the
stable learning rate shrinks with that number and a rate one notch too large blows the loss up
after some steps. For each ZO method of ``run.py`` and a grid of rates (steps of about 3x), one
process takes the run's local steps on client 0's data, then client 1's, ... (one client per
round, as many rounds as the run), and records the server's test loss after each round. A rate
whose loss leaves the initial loss by more than ``DIVERGED`` stops early.

    python -m benchmarks.zo.lr_sweep      # writes lr_sweep.json (report.py plots it)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from benchmarks.zo.run import METHODS, MODELS

HERE = Path(__file__).resolve().parent
GRIDS = {
    "smollm2-135m": {
        "zo-full-low-rank": [3e-6, 1e-5, 3e-5],
        "zo-lora-dense": [1e-4, 3e-4, 1e-3, 3e-3],
    },
    "minilm-l6": {
        "zo-full-dense": [1e-4, 3e-4, 1e-3, 3e-3],
        "zo-full-low-rank": [1e-4, 3e-4, 1e-3, 3e-3],
        "zo-lora-dense": [1e-3, 3e-3, 1e-2],
    },
}
DIVERGED = 1.0  # test loss this far above the initial one: the rate is too large
EVAL_EXAMPLES = 64


def sweep_one(model: str, method: str, lr: float) -> list[float]:
    """Test loss before and after each simulated round of sequential local steps at ``lr``."""
    from federated.config import parse_run_config
    from federated.model.evaluation import evaluate_model
    from federated.model.workspace import client_indices, encode_indices, server_test_indices
    from federated.zo.trainer import train_zo
    from federated.zo.workspace import forget_zo_model, zo_model

    shared = MODELS[model]
    raw = {**shared["run_config"], **METHODS[model][method], "zo.lr": lr}
    config = parse_run_config(raw)
    forget_zo_model()
    zo = zo_model(config)
    pad = zo.tokenizer.pad_token_id
    test = encode_indices(config, zo.tokenizer, server_test_indices(config), limit=EVAL_EXAMPLES)

    def test_loss() -> float:
        result = evaluate_model(
            zo.model, test, config.task, batch_size=config.eval.batch_size, pad_token_id=pad
        )
        return result.loss

    losses = [test_loss()]
    generator = torch.Generator().manual_seed(config.seed)
    for round_index in range(config.num_server_rounds):
        train_ids, _ = client_indices(config, round_index % shared["clients"], shared["clients"])
        train_zo(
            zo.model,
            zo.targets,
            zo.pool,
            encode_indices(config, zo.tokenizer, train_ids),
            config.task,
            steps=config.train.local_steps,
            lr=lr,
            eps=config.zo.eps,
            batch_size=config.train.batch_size,
            structure=config.zo.perturbation,
            pad_token_id=pad,
            generator=generator,
        )
        losses.append(test_loss())
        if not math.isfinite(losses[-1]) or losses[-1] > losses[0] + DIVERGED:
            break
    forget_zo_model()
    return losses


def main() -> None:
    torch.set_num_threads(1)
    results: dict = {"settings": {"grids": GRIDS, "diverged": DIVERGED, "eval": EVAL_EXAMPLES}}
    for model, methods in GRIDS.items():
        results[model] = {}
        for method, grid in methods.items():
            results[model][method] = {}
            for lr in grid:
                losses = sweep_one(model, method, lr)
                results[model][method][f"{lr:g}"] = losses
                print(
                    f"{model} {method} lr {lr:g}: " + " ".join(f"{x:.3f}" for x in losses),
                    flush=True,
                )
    (HERE / "lr_sweep.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {HERE / 'lr_sweep.json'}")


if __name__ == "__main__":
    main()
