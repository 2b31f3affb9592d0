"""What a zeroth-order client costs: step time over a forward pass, peak memory, replay time.

Every measurement runs in a fresh process with one torch thread (as a simulated client does), so
that peak memory is that of the measured phase alone: the kernel's peak-RSS counter is reset after
the model is loaded (``/proc/self/clear_refs``) and read after the phase.

    python -m benchmarks.zo.costs      # writes costs.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.cost_setup import MODELS, first_batch, model_config, peak_mb, reset_peak, rss_mb

HERE = Path(__file__).resolve().parent
COSTS = HERE / "costs.json"

# (zo.params, zo.perturbation): what a ZO client can train, and how its perturbations are drawn.
ZO_SETS = [("full", "dense"), ("full", "low-rank"), ("sparse", "dense"), ("lora", "dense")]
REPEATS = 5  # forward passes and steps timed per measurement (the median is kept)
DENSE_REPLAY_SEEDS = 16  # dense full replays K seeds at about a second each: time a few, scale up


def _forward_seconds(model: torch.nn.Module, batch: dict, task: str) -> float:
    from federated.model.losses import loss_terms

    model.eval()
    with torch.inference_mode():
        loss_terms(model, batch, task)  # warm-up: first-call allocations are not the steady state
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            loss_terms(model, batch, task)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_inference(model_name: str) -> dict:
    from federated.model.presets import load_base_model, load_tokenizer
    from federated.model.workspace import num_labels

    config = model_config(model_name)
    model = load_base_model(
        config.model.name, config.task, num_labels=num_labels(config), seed=config.seed
    )
    tokenizer = load_tokenizer(config.model.name)
    _, batch = first_batch(config, tokenizer, MODELS[model_name]["batch_size"])
    loaded = rss_mb()
    reset_peak()
    forward = _forward_seconds(model, batch, config.task)
    return {"forward_seconds": forward, "rss_after_load_mb": loaded, "peak_mb": peak_mb()}


def measure_zo_step(model_name: str, params: str, structure: str) -> dict:
    from federated.zo.trainer import train_zo
    from federated.zo.workspace import zo_model

    config = model_config(model_name, (params, structure))
    zo = zo_model(config)
    encoded, batch = first_batch(config, zo.tokenizer, MODELS[model_name]["batch_size"])
    loaded = rss_mb()
    reset_peak()
    forward = _forward_seconds(zo.model, batch, config.task)
    steps = []
    for i in range(REPEATS):
        result = train_zo(
            zo.model,
            zo.targets,
            zo.pool,
            encoded,
            config.task,
            steps=1,
            lr=config.zo.lr,
            eps=config.zo.eps,
            batch_size=len(encoded),
            structure=structure,
            pad_token_id=zo.tokenizer.pad_token_id,
            generator=torch.Generator().manual_seed(i),
        )
        steps.append(result.seconds)
    return {
        "forward_seconds": forward,
        "step_seconds": statistics.median(steps),
        "trained_parameters": sum(t.size for t in zo.targets),
        "rss_after_load_mb": loaded,
        "peak_mb": peak_mb(),
    }


def measure_lora_step(model_name: str) -> dict:
    from client.lora_trainer import train_lora
    from federated.model.workspace import lora_model

    config = model_config(model_name)
    local = lora_model(config)
    local.load(local.initial)
    encoded, batch = first_batch(config, local.tokenizer, MODELS[model_name]["batch_size"])
    loaded = rss_mb()
    reset_peak()
    forward = _forward_seconds(local.model, batch, config.task)
    settings = config.train.__class__(
        **{**vars(config.train), "local_steps": 1, "batch_size": len(encoded)}
    )
    steps = []
    for i in range(REPEATS):
        result = train_lora(
            local.model,
            encoded,
            config.task,
            settings,
            pad_token_id=local.tokenizer.pad_token_id,
            generator=torch.Generator().manual_seed(i),
        )
        steps.append(result.seconds)
    trained = sum(p.numel() for p in local.model.parameters() if p.requires_grad)
    return {
        "forward_seconds": forward,
        "step_seconds": statistics.median(steps),
        "trained_parameters": trained,
        "rss_after_load_mb": loaded,
        "peak_mb": peak_mb(),
    }


def measure_replay(model_name: str, params: str, structure: str) -> dict:
    """A client that joins late: a fresh model catches up on sums that moved every seed."""
    from federated.zo.workspace import zo_model

    config = model_config(model_name, (params, structure))
    zo = zo_model(config)
    pool_size = len(zo.pool)
    timed = DENSE_REPLAY_SEEDS if (params, structure) == ("full", "dense") else pool_size
    sums = torch.zeros(pool_size)
    sums[:timed] = torch.randn(timed, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    zo.load(sums)
    seconds = time.perf_counter() - start
    return {
        "pool_size": pool_size,
        "seeds_timed": timed,
        "seconds_for_pool": seconds * pool_size / timed,
        "extrapolated": timed < pool_size,
    }


def _child(kind: str, **kwargs: str) -> dict:
    """Run one measurement in a fresh interpreter and return its result."""
    spec = json.dumps({"kind": kind, **kwargs})
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.zo.costs", "--child", spec],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{spec} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{spec}: {result}", flush=True)
    return result


MEASUREMENTS = {
    "inference": measure_inference,
    "zo-step": measure_zo_step,
    "lora-step": measure_lora_step,
    "replay": measure_replay,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(MEASUREMENTS[spec.pop("kind")](**spec)))
        return
    results: dict = {"settings": {"models": MODELS, "repeats": REPEATS, "threads": 1}}
    for model in MODELS:
        entry: dict = {"inference": _child("inference", model_name=model)}
        entry["lora-step"] = _child("lora-step", model_name=model)
        for params, structure in ZO_SETS:
            name = f"zo-{params}-{structure}"
            kw = {"model_name": model, "params": params, "structure": structure}
            entry[name] = _child("zo-step", **kw)
            entry[name]["replay"] = _child("replay", **kw)
        results[model] = entry
    COSTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {COSTS}")


if __name__ == "__main__":
    main()
