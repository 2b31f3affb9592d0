"""How clients train and evaluate: local steps, optimizer, batches, the schedule across rounds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from federated.config.dp_defaults import auto_help
from federated.config.options import option
from federated.numeric_names import DEVICES, PRECISIONS


@dataclass(frozen=True)
class TrainSettings:
    local_steps: int = option(
        0,
        "Optimizer steps per client per round (0: from train.local-epochs when that is set, "
        f"else {auto_help('train.local-steps')}).",
        minimum=0,
    )
    local_epochs: float = option(
        0.0,
        "Passes over the client's data per round, with train.local-steps 0 (0: none).",
        minimum=0.0,
    )
    lr: float = option(0.0, f"AdamW learning rate (0: {auto_help('train.lr')}).", minimum=0.0)
    weight_decay: float = option(0.0, "AdamW weight decay.", minimum=0.0)
    batch_size: int = option(
        0,
        f"Examples per local step; under record-level DP, the expected Poisson batch "
        f"(0: {auto_help('train.batch-size')}).",
        minimum=0,
    )
    max_grad_norm: float = option(
        1.0, "Clip the gradient norm of a step to this (0: off).", minimum=0.0
    )
    device: str = option(
        "auto",
        "Where each process trains and evaluates: auto (CUDA, else Apple's MPS, else the CPU, "
        "on each machine for itself), cpu, cuda or mps. Tensors travel as CPU arrays.",
        choices=DEVICES,
    )
    precision: str = option(
        "fp32",
        "The base weights' dtype and the autocast dtype of first-order training and "
        "evaluation: fp32, bf16 or fp16 (with a loss scaler). LoRA factors stay float32.",
        choices=PRECISIONS,
    )
    gradient_checkpointing: bool = option(
        False,
        "Keep each transformer block's input only and recompute the rest in the backward pass: "
        "activation memory of about one block, for about a third more compute.",
    )
    lr_schedule: str = option(
        "constant",
        "Learning rate across rounds: constant, linear (decays to 0 at the last round) or cosine. "
        "Zeroth-order runs need constant: replay multiplies every scalar by one learning rate.",
        choices=("constant", "linear", "cosine"),
    )

    def steps_for(self, num_examples: int) -> int:
        """Steps of a round: fixed, or enough batches for the requested epochs."""
        if self.local_steps > 0:
            return self.local_steps
        return max(1, math.ceil(self.local_epochs * num_examples / self.batch_size))

    def lr_at(self, server_round: int, num_rounds: int) -> float:
        """The learning rate of a round (1-based) under the schedule."""
        progress = (server_round - 1) / num_rounds
        if self.lr_schedule == "linear":
            return self.lr * (1.0 - progress)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.lr


@dataclass(frozen=True)
class EvalSettings:
    batch_size: int = option(16, "Examples per evaluation batch.", minimum=1)
    max_examples: int = option(
        32,
        "Evaluate on at most N examples (evenly spread) of each held-out and test set (0: all).",
        minimum=0,
    )
    generate: bool = option(
        False,
        "Causal LM: the last round's server test also answers each test prompt (greedy) and "
        "scores the answers against the references: test_rouge_l and test_exact_match, the "
        "answers in the run folder's generations.jsonl.",
    )
    max_new_tokens: int = option(
        64, "Tokens a generated answer may have (eval.generate).", minimum=1
    )
