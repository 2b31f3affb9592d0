"""What storing the untrained weights lower saves (zo.frozen-dtype) on a device training
SmolLM2-135M's 0.1% most sensitive entries by seeds, and what it costs a step.

The server's mask is found once (``zo.calibration-examples`` of chatterbot outside the test
set) and saved; then, for each precision, a fresh process builds the zeroth-order model a
client builds, and reports its weights' bytes, its resident memory once built and after its
steps, its peak, and the time of a ZO step on the run's batches (after one warm-up step).

    python -m benchmarks.zo.frozen_memory     # frozen_memory.json, frozen_memory.png
    python -c "from benchmarks.zo.frozen_memory import replot; replot()"   # the plot again
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "frozen_memory.json"
PLOT = HERE / "frozen_memory.png"
DTYPES = ("float32", "bfloat16", "float16")
STEPS = 5
CONFIG = {
    "mode": "zo",
    "strategy.name": "fedkseed",
    "model.name": "smollm2-135m",
    "data.name": "chatterbot",
    "zo.params": "sensitive",
    "zo.sparse-fraction": 0.001,
    "zo.lr": 1e-5,
    "zo.pool-size": 4096,
    "train.batch-size": 4,
    "seed": 0,
}

MEASURE = """
import json, resource, sys, time
import torch
from safetensors.torch import load_file
from federated.zo.trainer import train_zo
from federated.config import parse_run_config
from federated.model.workspace import client_indices, encode_indices
from federated.zo.workspace import zo_model

def rss_mb(key="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

torch.set_num_threads(1)
config = parse_run_config(json.loads(sys.argv[1]))
mask = {k: v for k, v in load_file(sys.argv[2]).items()}
zo = zo_model(config, mask)
built = rss_mb()
weights = sum(p.numel() * p.element_size() for p in zo.model.parameters())
weights += sum(t.tensor.numel() * 4 for t in zo.targets
               if not isinstance(t.tensor, torch.nn.Parameter))
examples = encode_indices(config, zo.tokenizer, client_indices(config, 0, 10)[0])
kwargs = dict(lr=config.zo.lr, eps=config.zo.eps, batch_size=config.train.batch_size,
              structure=config.zo.perturbation, pad_token_id=zo.tokenizer.pad_token_id)
train_zo(zo.model, zo.targets, zo.pool, examples, config.task, steps=1,
         generator=torch.Generator().manual_seed(1), **kwargs)
start = time.perf_counter()
train_zo(zo.model, zo.targets, zo.pool, examples, config.task, steps=int(sys.argv[3]),
         generator=torch.Generator().manual_seed(2), **kwargs)
step = (time.perf_counter() - start) / int(sys.argv[3])
print(json.dumps({"weights_mb": weights / 2**20, "rss_built_mb": built,
                  "rss_after_steps_mb": rss_mb(), "anonymous_after_steps_mb": rss_mb("RssAnon"),
                  "file_after_steps_mb": rss_mb("RssFile"), "step_seconds": step,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "bytes_saved": zo.frozen_bytes_saved}))
"""


def _mask_file(folder: Path) -> Path:
    from safetensors.torch import save_file

    from federated.config import parse_run_config
    from federated.zo.workspace import sensitive_mask

    mask = sensitive_mask(parse_run_config(CONFIG))
    path = folder / "mask.safetensors"
    save_file({k: v.contiguous() for k, v in mask.items()}, str(path))
    return path


def _plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["dtypes"]
    fig, (mem, time) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(rows)
    bars = (
        ("weights_mb", "weights"),
        ("rss_after_steps_mb", "resident after steps"),
        ("anonymous_after_steps_mb", "of it anonymous"),
    )
    for k, (key, label) in enumerate(bars):
        offset = (k - 1) * 0.27
        mem.bar(
            [i + offset for i in range(len(names))],
            [rows[n][key] for n in names],
            width=0.27,
            label=label,
        )
    mem.set_xticks(range(len(names)), names)
    mem.set_ylabel("MB")
    mem.set_title("SmolLM2-135M, sensitive 0.1%: a client's memory")
    mem.legend()
    time.bar(names, [rows[n]["step_seconds"] for n in names])
    time.set_ylabel("seconds per ZO step (1 thread, batch 4)")
    time.set_title("step time")
    fig.tight_layout()
    fig.savefig(PLOT, dpi=120)


def replot() -> None:
    _plot(json.loads(RESULTS.read_text()))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mask = _mask_file(Path(tmp))
        rows = {}
        for dtype in DTYPES:
            config = json.dumps({**CONFIG, "zo.frozen-dtype": dtype})
            out = subprocess.run(
                [sys.executable, "-c", MEASURE, config, str(mask), str(STEPS)],
                check=True,
                capture_output=True,
                text=True,
            )
            rows[dtype] = json.loads(out.stdout.strip().splitlines()[-1])
            print(dtype, rows[dtype], flush=True)
    results = {"settings": {"config": CONFIG, "steps": STEPS, "threads": 1}, "dtypes": rows}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    _plot(results)
    print(f"wrote {RESULTS} and {PLOT}")


if __name__ == "__main__":
    main()
