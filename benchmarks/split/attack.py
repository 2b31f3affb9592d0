"""What a split device's activations give away, and what noise on them costs: the inversion
attack of ``federated.split.inversion`` against SmolLM2-135M-Instruct cut after 1, 2 and 4 of
its 30 blocks, on the server's chatterbot test examples (which no device trains on), with the
activations as a device sends them: plain, or clipped to the median example norm and noised at
several multipliers (``split.activation-clip`` / ``split.activation-noise``).

- attack: the share of the examples' real tokens the server recovers, its linear map fitted on
  400 WordNet definitions (public text of another corpus), behind the run's initial prompt;
- utility: the test loss of the same model when the body and the tail compute on the noised
  activations (no training: what the noise does to every forward the server runs for a device).

    PYTHONPATH=. python -m benchmarks.split.attack   # results.json, attack.png
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from benchmarks.figures import save
from federated.config import parse_run_config
from federated.data.encode import collate
from federated.data.wordnet import load_wordnet
from federated.model.losses import lm_loss_terms
from federated.model.presets import load_tokenizer
from federated.model.workspace import encode_indices, server_test_indices
from federated.split.activation_noise import clipped, noise_like
from federated.split.inversion import LinearInversion
from federated.split.split_workspace import split_model

HERE = Path(__file__).resolve().parent
CUTS = (1, 2, 4)
MULTIPLIERS = (0.0, 0.001, 0.003, 0.01)
TEST_EXAMPLES = 32
PUBLIC_TEXTS = 400


def _public_rows(tokenizer) -> list[torch.Tensor]:
    examples = load_wordnet(categories=None, max_per_class=None, seed=0).examples
    chosen = examples[:: len(examples) // PUBLIC_TEXTS][:PUBLIC_TEXTS]
    return [tokenizer(e.text, return_tensors="pt")["input_ids"][0, :64] for e in chosen]


def measure_cut(cut: int) -> list[dict]:
    config = parse_run_config({"mode": "split", "strategy.name": "fedavg", "split.cut-layer": cut})
    split, tokenizer = split_model(config), load_tokenizer(config.model.name)
    attack = LinearInversion.fit(split, _public_rows(tokenizer))
    encoded = encode_indices(config, tokenizer, server_test_indices(config)[:TEST_EXAMPLES])
    batch = collate(encoded, tokenizer.pad_token_id)
    rows = []
    with torch.no_grad():
        hidden, mask = split.head(batch["input_ids"], batch["attention_mask"])
        clip = float(hidden.flatten(1).norm(dim=1).median())
        for multiplier in MULTIPLIERS:
            sent = hidden
            if multiplier > 0:
                sent = clipped(hidden, clip)
                sent = sent + noise_like(sent, clip, multiplier, torch.Generator().manual_seed(0))
            logits = split.tail(split.body(sent, mask))
            rows.append(
                {
                    "cut": cut,
                    "noise_multiplier": multiplier,
                    "clip": clip if multiplier > 0 else None,
                    "recovered_tokens": attack.recovered_share(sent, mask, batch["input_ids"]),
                    "test_loss": float(lm_loss_terms(logits, batch["labels"]).mean_loss()),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for cut in CUTS:
        mine = [r for r in rows if r["cut"] == cut]
        xs = [max(r["noise_multiplier"], 3e-4) for r in mine]  # log axis: plain at the left
        left.plot(xs, [r["recovered_tokens"] for r in mine], "o-", label=f"cut after {cut}")
        right.plot(xs, [r["test_loss"] for r in mine], "o-", label=f"cut after {cut}")
    for ax, what in ((left, "tokens the server recovers"), (right, "test loss through the cut")):
        ax.set_xscale("log")
        ax.set_xlabel("split.activation-noise (leftmost: none)")
        ax.set_ylabel(what)
        ax.legend()
    left.set_ylim(0, 1)
    save(fig, path)


def main() -> None:
    torch.set_num_threads(2)
    started = time.perf_counter()
    rows = [row for cut in CUTS for row in measure_cut(cut)]
    result = {
        "model": "smollm2-135m",
        "test_examples": TEST_EXAMPLES,
        "public_texts": PUBLIC_TEXTS,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    (HERE / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, HERE / "attack.png")


if __name__ == "__main__":
    main()
