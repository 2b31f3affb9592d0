"""The quick start's kind of model, exported: SmolLM2-135M with a LoRA adapter from a short run,
merged, and written as GGUF in f16, q8_0 and q4_0. For each file: its size, and on chatterbot
prompts (as the model sees them, chat template included) the largest and mean absolute
difference of its logits (transformers' GGUF loader) from the merged float32 model's, and how
often the most likely next token is the same. With a Python that imports ``llama_cpp``
(``--llama-python``; llama-cpp-python 0.3.36 compiles llama.cpp), llama.cpp itself loads each
file and continues each prompt greedily (``llama_generate.py``).

    PYTHONPATH=. python -m benchmarks.export.run [--llama-python /tmp/llamacpp-venv/bin/python]

writes ``results.json`` and ``export.png``; the run folder (``runs/quick``) is reused
when it is there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.figures import save
from federated.data.chatterbot import load_chatterbot
from federated.data.encode import render_prompt
from federated.export.run_export import export_run
from tests.in_process import run_federation

HERE = Path(__file__).resolve().parent
TYPES = ("f16", "q8_0", "q4_0")
RUN = {
    "model.name": "smollm2-135m",
    "num-server-rounds": 2,
    "strategy.fraction-evaluate": 0.0,
    "eval.max-examples": 16,
    "seed": 0,
}
CLIENTS = 3
PROMPTS = 8  # chatterbot questions, evenly spread over the corpus
NEW_TOKENS = 24


def prompts(tokenizer) -> list[str]:
    examples = load_chatterbot().examples
    chosen = [examples[i * len(examples) // PROMPTS] for i in range(PROMPTS)]
    return [render_prompt(example.text, tokenizer) for example in chosen]


def logits(model, tokenizer, texts: list[str]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(**tokenizer(text, return_tensors="pt")).logits[0] for text in texts]


def compare(reference: list[torch.Tensor], other: list[torch.Tensor]) -> dict:
    diffs = torch.cat([(o - r).abs().flatten() for r, o in zip(reference, other, strict=True)])
    same = torch.cat([o.argmax(-1) == r.argmax(-1) for r, o in zip(reference, other, strict=True)])
    last = [bool(o[-1].argmax() == r[-1].argmax()) for r, o in zip(reference, other, strict=True)]
    return {
        "max_abs_logit_diff": float(diffs.max()),
        "mean_abs_logit_diff": float(diffs.mean()),
        "logit_scale": float(torch.cat([r.abs().flatten() for r in reference]).mean()),
        "argmax_agreement_all_positions": float(same.float().mean()),
        "next_token_agreement_at_prompt_end": sum(last) / len(last),
    }


def greedy(model, tokenizer, texts: list[str]) -> list[str]:
    """The float32 model's greedy continuations, as llama.cpp is asked for them."""
    outs = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)
        outs.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return outs


def llama_cpp_generations(
    python: str, files: dict[str, Path], texts: list[str], reference: list[str]
) -> dict:
    check = subprocess.run([python, "-c", "import llama_cpp"], capture_output=True, text=True)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        return {"skipped": f"{python} cannot import llama_cpp ({last})"}
    request = {"files": {k: str(v) for k, v in files.items()}, "prompts": texts, "new": NEW_TOKENS}
    done = subprocess.run(
        [python, str(HERE / "llama_generate.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
    )
    generated = json.loads(done.stdout)
    for gguf_type in files:
        rows = generated[gguf_type]
        for row, expected in zip(rows, reference, strict=True):
            row["float32_text"] = expected
        generated[f"{gguf_type}_same_text_as_float32"] = sum(
            row["text"] == row["float32_text"] for row in rows
        )
    return generated


def plot(results: dict, path: Path) -> None:
    fig, (size, same) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["float32", *TYPES]
    sizes = list(results["sizes_mib"].values())
    size.bar(names, sizes)
    size.set_ylabel("file size (MiB)")
    agreement = [1.0] + [results["gguf"][t]["argmax_agreement_all_positions"] for t in TYPES]
    same.bar(names, [100 * a for a in agreement])
    same.set_ylabel("same most likely next token (%)")
    same.set_ylim(0, 100)
    for axis in (size, same):
        axis.grid(axis="y", alpha=0.3)
    fig.suptitle("SmolLM2-135M + LoRA, merged: GGUF types against float32")
    save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-python", default=sys.executable)
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = HERE / "runs" / "quick"
    if not (folder / "summary.json").is_file():
        run_federation(HERE / "runs", "quick", RUN, CLIENTS)
    trained_s = json.loads((folder / "summary.json").read_text())["wall_seconds"]
    started = time.perf_counter()
    exported = export_run(folder, gguf_types=TYPES)
    export_s = time.perf_counter() - started
    out = exported.folder
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = prompts(tokenizer)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    reference = logits(merged, tokenizer, texts)
    files = {t: out / f"smollm2-135m-{t}.gguf" for t in TYPES}
    results = {
        "config": {**RUN, "clients": CLIENTS, "prompts": PROMPTS},
        "seconds": {"run": trained_s, "export_with_3_gguf": export_s},
        "sizes_mib": {
            "model.safetensors (float32)": (out / "model.safetensors").stat().st_size / 2**20
        }
        | {p.name: p.stat().st_size / 2**20 for p in files.values()},
        "gguf": {},
    }
    for gguf_type, path in files.items():
        model = AutoModelForCausalLM.from_pretrained(out, gguf_file=path.name, dtype=torch.float32)
        results["gguf"][gguf_type] = compare(reference, logits(model, tokenizer, texts))
    reference_texts = greedy(merged, tokenizer, texts)
    results["llama_cpp"] = llama_cpp_generations(args.llama_python, files, texts, reference_texts)
    plot(results, HERE / "export.png")
    (HERE / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
