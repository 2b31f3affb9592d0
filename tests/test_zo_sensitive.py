"""Sensitive sparse parameters: the mask takes the entries of largest squared gradient over all
matrices, the squares are those of the gradients computed directly, the server's mask is the
same in another process, and a node keeps the mask it was sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from flwr.app import RecordDict

from federated.config import parse_run_config
from federated.data.encode import collate
from federated.model.losses import loss_terms
from federated.model.presets import load_base_model
from federated.protocol import message_keys as keys
from federated.tasks import TASK_CAUSAL_LM
from federated.zo.sensitive import (
    client_mask,
    mask_arrays,
    mask_digest,
    sensitive_targets,
    squared_gradients,
    top_entries,
)
from federated.zo.sums_sync import OutOfSync
from federated.zo.workspace import forget_zo_model, save_mask, sensitive_mask, zo_model

ROOT = Path(__file__).resolve().parents[1]
SENSITIVE = {
    "mode": "zo",
    "strategy.name": "fedkseed",
    "model.name": "tiny-llama",
    "zo.params": "sensitive",
    "zo.sparse-fraction": 0.001,
    "zo.pool-size": 16,
    "zo.calibration-examples": 8,
    "train.batch-size": 4,
}


def test_the_mask_takes_the_largest_squares_ranked_over_all_matrices() -> None:
    squares = {"b": torch.tensor([[5.0, 2.0, 8.0]]), "a": torch.tensor([[1.0, 9.0], [3.0, 0.0]])}
    mask = top_entries(squares, 3 / 7)
    assert set(mask) == {"a", "b"}
    assert mask["a"].tolist() == [1] and mask["b"].tolist() == [0, 2]
    assert all(m.dtype == torch.int32 for m in mask.values())
    assert list(top_entries(squares, 1 / 7)) == ["a"]  # a matrix with no entry is left out


def _batches() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    rows = [
        {
            "input_ids": torch.randint(10, 1000, (8,), generator=generator).tolist(),
            "attention_mask": [1] * 8,
            "labels": [-100] * 4 + [7] * 4,
        }
        for _ in range(4)
    ]
    return [collate(rows[:2], 0), collate(rows[2:], 0)]


def test_the_squares_are_the_summed_squared_gradients_of_each_batch() -> None:
    model = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    squares = squared_gradients(model, _batches(), TASK_CAUSAL_LM)
    assert all(p.requires_grad for p in model.parameters())  # as the model had them
    assert all(p.grad is None for p in model.parameters())
    name = "model.layers.0.self_attn.q_proj.weight"
    param = dict(model.named_parameters())[name]
    expected = torch.zeros_like(param)
    for batch in _batches():
        (grad,) = torch.autograd.grad(loss_terms(model, batch, TASK_CAUSAL_LM).mean_loss(), [param])
        expected += grad.pow(2)
    torch.testing.assert_close(squares[name], expected, rtol=1e-5, atol=1e-12)
    assert all(v.dim() == 2 for v in squares.values())


def test_targets_follow_the_mask_and_keep_every_vector_whole() -> None:
    model = load_base_model("tiny-llama", TASK_CAUSAL_LM, seed=0)
    name = "model.layers.0.mlp.up_proj.weight"
    targets = sensitive_targets(model, {name: torch.tensor([3, 40], dtype=torch.int32)})
    matrices = [t for t in targets if t.tensor.dim() == 2]
    assert len(matrices) == 1 and matrices[0].indices.tolist() == [3, 40]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    assert sum(t.tensor.dim() < 2 for t in targets) == len(vectors)
    with pytest.raises(ValueError, match="the mask names a matrix this model lacks"):
        sensitive_targets(model, {"no.such.weight": torch.tensor([0], dtype=torch.int32)})


MASK_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from federated.config import parse_run_config
from federated.zo.sensitive import mask_digest
from federated.zo.workspace import sensitive_mask
print(mask_digest(sensitive_mask(parse_run_config(json.loads(sys.argv[1])))))
"""


# A child process of its own (about 8 s): the end-to-end layer's.
@pytest.mark.slow
def test_the_servers_mask_is_the_same_in_another_process() -> None:
    config = parse_run_config(SENSITIVE)
    there = subprocess.run(
        [sys.executable, "-c", MASK_SCRIPT, json.dumps(SENSITIVE)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": ""},
    ).stdout.strip()
    mask = sensitive_mask(config)
    assert there == mask_digest(mask)
    entries = sum(m.numel() for m in mask.values())
    matrices = sum(p.numel() for p in zo_model(config, mask).model.parameters() if p.dim() == 2)
    assert entries == round(0.001 * matrices)
    forget_zo_model()


def test_a_node_keeps_the_mask_it_was_sent_and_without_one_asks_again() -> None:
    mask = {"m.weight": torch.tensor([1, 5], dtype=torch.int32)}
    state = RecordDict()

    def content(arrays: dict) -> dict:
        return {keys.SEED_SUMS: torch.zeros(4), **arrays}

    with pytest.raises(OutOfSync, match="holds no sensitive mask"):
        client_mask(content({}), state)
    assert mask_digest(client_mask(content(mask_arrays(mask)), state)) == mask_digest(mask)
    assert mask_digest(client_mask(content({}), state)) == mask_digest(mask)


def test_a_different_mask_reloads_the_model_at_w0() -> None:
    config = parse_run_config(SENSITIVE)
    first = {"model.layers.0.mlp.up_proj.weight": torch.tensor([0, 1], dtype=torch.int32)}
    zo = zo_model(config, first)
    zo.load(torch.ones(len(zo.pool)))
    other = {"model.layers.1.mlp.up_proj.weight": torch.tensor([0, 1], dtype=torch.int32)}
    again = zo_model(config, other)
    assert again is not zo and again.applied.abs().sum() == 0
    assert again.mask_digest == mask_digest(other)
    forget_zo_model()


def test_a_resumed_run_takes_the_mask_its_folder_keeps(tmp_path: Path) -> None:
    kept = {"model.layers.0.mlp.up_proj.weight": torch.tensor([2, 9], dtype=torch.int32)}
    save_mask(kept, tmp_path)
    config = parse_run_config({**SENSITIVE, "resume": str(tmp_path)})
    assert mask_digest(sensitive_mask(config)) == mask_digest(kept)
