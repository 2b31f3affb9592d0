"""The server's copy of the global model: it tests each round's model and saves the final one."""

from __future__ import annotations

import json
from logging import INFO
from pathlib import Path

from flwr.common import log
from safetensors.torch import save_file

from federated.atomic_file import replace_file
from federated.config import RunConfig
from federated.data.corpus import evenly_spread
from federated.inference.evaluation_report import GENERATIONS_FILE
from federated.inference.generation import Decoding
from federated.inference.scoring import generation_scores
from federated.inference.trained_model import TrainedModel
from federated.model.adapter_files import save_global_adapter
from federated.model.evaluation import EvalResult, evaluate_model
from federated.model.workspace import corpus_for, encode_records, server_test_indices
from federated.protocol.global_model import GlobalModel
from federated.zo.workspace import MASK_FILE


def model_files(config: RunConfig) -> tuple[str, ...]:
    """What the run saves of its final model, in its folder."""
    if config.mode != "zo":
        return ("adapter",)
    mask = (MASK_FILE,) if config.zo.params == "sensitive" else ()
    return ("zo_sums.safetensors", "zo_model.json", *mask)


class ServerModel(TrainedModel):
    """The global model loaded into a model the server can run, with the server's test set."""

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        if self.zo is not None and self.zo.frozen_bytes_saved:
            log(
                INFO,
                "zo.frozen-dtype %s: the model's weights take %.1f MB less on each device",
                config.zo.frozen_dtype,
                self.zo.frozen_bytes_saved / 2**20,
            )
        corpus = corpus_for(config).examples
        self.test_examples = evenly_spread(
            [corpus[i] for i in server_test_indices(config)], config.eval.max_examples
        )
        self.test_set = encode_records(config, self.tokenizer, self.test_examples)

    def evaluate(self, model: GlobalModel) -> EvalResult:
        return evaluate_model(
            self.load(model),
            self.test_set,
            self.config.task,
            batch_size=self.config.eval.batch_size,
            pad_token_id=self.tokenizer.pad_token_id,
            precision=self.config.train.precision,
        )

    def answer_test(self, model: GlobalModel, folder: Path) -> dict[str, float]:
        """eval.generate: the model's greedy answers to the test prompts, scored against the
        references (Rouge-L, exact match) and written to ``generations.jsonl`` in ``folder``."""
        decoding = Decoding(self.config.eval.max_new_tokens, seed=self.config.seed)
        module = self.load(model)
        metrics, answers = generation_scores(
            module, self.tokenizer, self.config, self.test_examples, decoding
        )
        lines = (
            json.dumps({"prompt": e.text, "reference": e.target, "answer": a}) + "\n"
            for e, a in zip(self.test_examples, answers, strict=True)
        )
        replace_file(folder / GENERATIONS_FILE, "".join(lines).encode())
        return metrics

    def save(self, model: GlobalModel, folder: Path) -> None:
        """The adapter in peft's format (LoRA, or a split run's prompt tuning), or the seed sums
        and how to replay them (zo)."""
        module = self.load(model)
        if self.split:  # peft's prompt-tuning adapter: PeftModel.from_pretrained loads it
            module.save_pretrained(str(folder / "adapter"))
            return
        if self.local:
            save_global_adapter(self.local, model.base_delta, folder / "adapter")
            return
        z = self.config.zo
        # The seed sums, and the hybrid modules' values under their wire keys.
        save_file(model.trainable, str(folder / "zo_sums.safetensors"))
        recipe = {
            "model": self.config.model.name,
            "seed": self.config.seed,
            "pool-size": z.pool_size,
            "params": z.params,
            "perturbation": z.perturbation,
            "lr": z.lr,
            "sparse-fraction": z.sparse_fraction,
            "hybrid": z.hybrid,
        }
        (folder / model_files(self.config)[1]).write_text(json.dumps(recipe, indent=2) + "\n")
