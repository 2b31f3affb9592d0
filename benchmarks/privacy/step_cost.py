"""What a DP-SGD step costs against the non-private step of the same batch, per opacus mode.

Each measurement runs in a fresh process with one torch thread (as a simulated client does):
the model loads, the kernel's peak-RSS counter is reset, and the steps are timed and their peak
read. The private step takes a fixed batch (sample rate 1 with one step per call), so both sides
see the same examples.

    python -m benchmarks.privacy.step_cost     # writes step_cost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.cost_setup import MODELS, first_batch, model_config, peak_mb, reset_peak

HERE = Path(__file__).resolve().parent
RESULT = HERE / "step_cost.json"
REPEATS = 5
KINDS = ("plain", "hooks", "functorch", "ghost")


def measure(model_name: str, kind: str) -> dict:
    from client.dp_lora_trainer import train_lora_dp
    from client.lora_trainer import train_lora
    from federated.model.workspace import lora_model

    config = model_config(model_name)
    local = lora_model(config)
    local.load(local.initial)
    encoded, _ = first_batch(config, local.tokenizer, MODELS[model_name]["batch_size"])
    settings = config.train.__class__(
        **{**vars(config.train), "local_steps": 1, "batch_size": len(encoded)}
    )
    pad = local.tokenizer.pad_token_id
    reset_peak()
    times = []
    for i in range(REPEATS + 1):  # the first call warms up
        generator = torch.Generator().manual_seed(i)
        if kind == "plain":
            result = train_lora(
                local.model, encoded, config.task, settings, pad_token_id=pad, generator=generator
            )
        else:
            result = train_lora_dp(
                local.model,
                encoded,
                config.task,
                settings,
                noise_multiplier=1.0,
                max_grad_norm=1.0,
                sample_rate=1.0,
                expected_batch=len(encoded),
                mode=kind,
                pad_token_id=pad,
                generator=generator,
            )
        times.append(result.seconds)
    return {"step_seconds": statistics.median(times[1:]), "peak_mb": peak_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    results: dict = {"settings": {"models": MODELS, "repeats": REPEATS, "threads": 1}}
    for model in MODELS:
        entry = {}
        for kind in KINDS:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.privacy.step_cost", "--child", model, kind],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{model} {kind} failed:\n{proc.stderr[-3000:]}")
            entry[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(model, kind, entry[kind], flush=True)
        results[model] = entry
    RESULT.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
