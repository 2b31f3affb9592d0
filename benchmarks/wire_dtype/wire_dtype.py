"""The quick start's job, shortened, with its LoRA tensors on the wire in float32, bfloat16 and
float16: the test loss after each round and the bytes each way.

SmolLM2-135M on chatterbot (the defaults: LoRA r=8 on q and v), 3 clients, all in each of 3
rounds, through the real ServerApp and ClientApps in one process (``tests.in_process``: every
message crosses Flower's wire format, and its bytes are counted as Flower serializes it).

    PYTHONPATH=. python -m benchmarks.wire_dtype.wire_dtype   # results.json, wire_dtype.png
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from benchmarks.figures import save
from tests.in_process import run_federation

HERE = Path(__file__).resolve().parent
DTYPES = ("float32", "bfloat16", "float16")
CLIENTS = 3
RUN = {"num-server-rounds": 3, "strategy.fraction-evaluate": 0.0, "seed": 0}


def measure(out: Path) -> dict:
    runs = {}
    for dtype in DTYPES:
        started = time.perf_counter()
        folder = run_federation(out, dtype, {**RUN, "wire.dtype": dtype}, CLIENTS)
        rounds = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        runs[dtype] = {
            "seconds": time.perf_counter() - started,
            "test_loss": [r["test_loss"] for r in rounds],
            "clients_accepted": [r["clients_accepted"] for r in rounds[1:]],
            "bytes_down": [r["train_bytes_down"] for r in rounds[1:]],
            "bytes_up": [r["train_bytes_up"] for r in rounds[1:]],
        }
    return {"config": {**RUN, "clients": CLIENTS, "model.name": "smollm2-135m"}, "runs": runs}


def plot(results: dict, path: Path) -> None:
    fig, (loss, size) = plt.subplots(1, 2, figsize=(10, 4))
    for dtype, run in results["runs"].items():
        loss.plot(range(len(run["test_loss"])), run["test_loss"], marker="o", label=dtype)
    loss.set_xlabel("round")
    loss.set_ylabel("server test loss")
    loss.set_xticks(range(len(run["test_loss"])))
    loss.legend()
    loss.grid(alpha=0.3)
    names = list(results["runs"])
    per_round = [
        (results["runs"][d]["bytes_down"][-1] / 1e6, results["runs"][d]["bytes_up"][-1] / 1e6)
        for d in names
    ]
    x = range(len(names))
    size.bar([i - 0.2 for i in x], [d for d, _ in per_round], 0.4, label="server to clients")
    size.bar([i + 0.2 for i in x], [u for _, u in per_round], 0.4, label="clients to server")
    size.set_xticks(list(x), names)
    size.set_ylabel(f"MB in the last round ({CLIENTS} clients)")
    size.legend()
    size.grid(axis="y", alpha=0.3)
    fig.suptitle("SmolLM2-135M, LoRA r=8 on q,v, chatterbot, wire.dtype")
    save(fig, path)


def main() -> None:
    torch.set_num_threads(1)
    out = HERE / "runs"
    shutil.rmtree(out, ignore_errors=True)
    results = measure(out)
    shutil.rmtree(out)
    (HERE / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, HERE / "wire_dtype.png")
    for dtype, run in results["runs"].items():
        losses = " ".join(f"{v:.4f}" for v in run["test_loss"])
        print(f"{dtype}: loss {losses} | down {run['bytes_down'][-1]} up {run['bytes_up'][-1]}")


if __name__ == "__main__":
    main()
