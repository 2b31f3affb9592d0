"""The accelerator benchmark's figure: estimate against measured memory, step times by device,
and replay's differences between the devices."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from benchmarks.figures import save


def _label(row: dict) -> str:
    numerics = "nf4" if row["quantization"] == "4bit" else "bf16"
    return f"{row['model']}\n{numerics}{' ckpt' if row['gradient_checkpointing'] else ''}"


def _memory(ax: plt.Axes, rows: list[dict]) -> None:
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["estimate_tensors_gb"] for r in rows], 0.4, label="estimate")
    measured = [(i, r["peak_allocated_gb"]) for i, r in enumerate(rows) if "peak_allocated_gb" in r]
    if measured:
        ax.bar([i + 0.2 for i, _ in measured], [gb for _, gb in measured], 0.4, label="measured")
    ax.set_xticks(list(x), [_label(r) for r in rows], fontsize=6, rotation=90)
    ax.set_ylabel("GB at the step's peak (tensors)")
    batch, length = rows[0]["batch"], rows[0]["length"]
    ax.set_title(f"LoRA r32 on q,v, batch {batch} x {length}: planner vs max_memory_allocated")
    ax.legend(fontsize=8)


def _steps(ax: plt.Axes, rows: list[dict]) -> None:
    timed = [r for r in rows if "seconds_per_step" in r]
    series = sorted({(r["model"], r["device"]) for r in timed})
    trainers = list(dict.fromkeys(r["trainer"] for r in timed))
    width = 0.8 / max(1, len(series))
    for k, (model, device) in enumerate(series):
        values = {
            r["trainer"]: r["seconds_per_step"]
            for r in timed
            if (r["model"], r["device"]) == (model, device)
        }
        xs = [i + k * width for i, t in enumerate(trainers) if t in values]
        ax.bar(
            xs,
            [values[t] * 1e3 for t in trainers if t in values],
            width,
            label=f"{model}, {device}",
        )
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(trainers))], trainers, fontsize=8)
    ax.set_yscale("log")
    # Bars on a log scale start at the axis: a decade below the fastest keeps them comparable.
    ax.set_ylim(bottom=min(r["seconds_per_step"] for r in timed) * 1e3 / 10)
    ax.set_ylabel("ms per step")
    ax.set_title("fedtune's trainers, one step")
    ax.legend(fontsize=7)


def _replay(ax: plt.Axes, rows: list[dict]) -> None:
    ax.axis("off")
    lines = ["model / params / structure: max |CPU - other| of the draw, after perturb, replay"]
    for r in rows:
        case = f"{r['model']} / {r['params']} / {r['structure']}"
        lines.append(
            f"{case} ({r['seeds']} seeds, vs {r['device']}): "
            f"{r['draw_max_abs_diff']:.3g}{' (bit-exact)' if r['draw_bit_exact'] else ''}, "
            f"{r['perturb_max_abs_diff']:.3g}{' (bit-exact)' if r['perturb_bit_exact'] else ''}, "
            f"{r['replay_max_abs_diff']:.3g}{' (bit-exact)' if r['replay_bit_exact'] else ''}"
            f" of a change up to {r['replay_max_abs_change']:.3g}"
        )
    ax.text(0, 1, "\n".join(lines), va="top", fontsize=7, family="monospace")
    ax.set_title("seed replay, CPU against the device")


def plot(results: dict, path: Path) -> None:
    fig, axes = plt.subplots(3, 1, figsize=(11, 12), height_ratios=(3, 2, 1))
    if results.get("memory"):
        _memory(axes[0], results["memory"])
    if results.get("step_time"):
        _steps(axes[1], results["step_time"])
    if results.get("replay"):
        _replay(axes[2], results["replay"])
    where = results["environment"].get("gpu", "CPU only")
    fig.suptitle(f"benchmarks/accelerator, {results['mode']}: {where}")
    save(fig, path)
