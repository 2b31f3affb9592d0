"""Hybrid zeroth-order training: the head's step is a first-order step computed here directly,
the body still replays bit for bit in another process, the server averages heads as FedAvg does,
and a reply's head is held to its shape, finiteness and the update bound."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from flwr.app import Message, MetricRecord, RecordDict

from federated.config import ConfigError, parse_run_config
from federated.data.encode import collate
from federated.model.losses import loss_terms
from federated.model.presets import load_base_model
from federated.protocol import message_keys as keys
from federated.protocol.global_model import zo_initial_model
from federated.protocol.reply_contract import PLAIN, train_metric_keys
from federated.protocol.wire import tensors_to_record
from federated.tasks import TASK_CLASSIFICATION
from federated.zo.hybrid import WIRE_PREFIX, hybrid_parameters, hybrid_state
from federated.zo.perturbation import perturb_
from federated.zo.seed_pool import SeedPool
from federated.zo.targets import zo_targets
from federated.zo.trainer import train_zo
from federated.zo.workspace import forget_zo_model, zo_model
from server.reply_validation import check_seed_reply
from strategies.fedkseed import FedKSeed
from strategies.partition_sampling import PartitionSampler
from tests.messages import message

ROOT = Path(__file__).resolve().parents[1]
HYBRID = {
    "mode": "zo",
    "strategy.name": "fedkseed",
    "model.name": "tiny-bert",
    "data.name": "wordnet",
    "data.num-classes": 4,
    "zo.hybrid": "head",
    "zo.pool-size": 32,
}
EPS, LR, HEAD_LR = 1e-2, 1e-3, 0.5


def _examples(n: int = 6) -> list[dict]:
    generator = torch.Generator().manual_seed(3)
    return [
        {
            "input_ids": [
                101,
                *torch.randint(1000, 5000, (5 + i,), generator=generator).tolist(),
                102,
            ],
            "attention_mask": [1] * (7 + i),
            "label": i % 3,
        }
        for i in range(n)
    ]


def _model() -> tuple[torch.nn.Module, dict, list]:
    model = load_base_model("tiny-bert", TASK_CLASSIFICATION, num_labels=3, seed=0)
    hybrid = hybrid_parameters(model, "head")
    targets = [
        t for t in zo_targets(model, "full") if all(t.tensor is not p for p in hybrid.values())
    ]
    for param in model.parameters():
        param.requires_grad_(False)
    for param in hybrid.values():
        param.requires_grad_(True)
    return model, hybrid, targets


def test_the_heads_step_is_the_mean_of_its_gradients_at_the_two_perturbed_bodies() -> None:
    model, hybrid, targets = _model()
    assert sorted(hybrid) == [f"{WIRE_PREFIX}classifier.bias", f"{WIRE_PREFIX}classifier.weight"]
    reference = copy.deepcopy(model).eval()  # as train_zo runs it: no dropout
    pool, encoded = SeedPool.from_run_seed(0, 8), _examples()
    result = train_zo(
        model,
        targets,
        pool,
        encoded,
        TASK_CLASSIFICATION,
        steps=1,
        lr=LR,
        eps=EPS,
        batch_size=len(encoded),
        structure="dense",
        pad_token_id=0,
        generator=torch.Generator().manual_seed(0),
        hybrid=hybrid,
        hybrid_lr=HEAD_LR,
    )

    ref_hybrid = hybrid_parameters(reference, "head")
    ref_targets = [
        t
        for t in zo_targets(reference, "full")
        if all(t.tensor is not p for p in ref_hybrid.values())
    ]
    batch, seed = collate(encoded, 0), pool[result.indices[0]]
    grads = []
    for scale in (EPS, -2 * EPS):
        perturb_(ref_targets, seed, scale, "dense")
        terms = loss_terms(reference, batch, TASK_CLASSIFICATION)
        loss = (terms.loss_sum / terms.count).mean()
        grads.append(torch.autograd.grad(loss, list(ref_hybrid.values())))
    for (key, param), g_plus, g_minus in zip(ref_hybrid.items(), *grads, strict=True):
        expected = param.detach() - HEAD_LR * (g_plus + g_minus) / 2
        torch.testing.assert_close(hybrid[key].detach(), expected, rtol=1e-5, atol=1e-6)
        assert not torch.equal(hybrid[key].detach(), param.detach())  # it did move
    assert all(p.grad is None for p in hybrid.values())


REPLAY_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from tests.test_zo_hybrid import replayed_body
torch.save(replayed_body(json.loads(sys.argv[1])), sys.argv[2])
"""


def replayed_body(config: dict) -> list[torch.Tensor]:
    """The body's weights after the run's model replays fixed seed sums (its head aside)."""
    forget_zo_model()
    zo = zo_model(parse_run_config(config))
    zo.load(torch.linspace(-1.0, 1.0, len(zo.pool)))
    out = [t.tensor.detach().clone() for t in zo.targets]
    forget_zo_model()
    return out


# A child process of its own (about 8 s): the end-to-end layer's.
@pytest.mark.slow
def test_the_body_replays_bit_for_bit_in_another_process_and_leaves_the_head_out(
    tmp_path: Path,
) -> None:
    config = {**HYBRID, "zo.perturbation": "low-rank"}
    path = tmp_path / "body.pt"
    subprocess.run(
        [sys.executable, "-c", REPLAY_SCRIPT, __import__("json").dumps(config), str(path)],
        cwd=ROOT,
        check=True,
        env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    here, there = replayed_body(config), torch.load(path)
    assert len(here) == len(there) > 0
    assert all(torch.equal(a, b) for a, b in zip(here, there, strict=True))
    zo = zo_model(parse_run_config(config))
    head = {id(p) for p in zo.hybrid.values()}
    assert head and not any(id(t.tensor) in head for t in zo.targets)
    forget_zo_model()


def _strategy(head: dict[str, torch.Tensor]) -> FedKSeed:
    return FedKSeed(
        zo_initial_model(16, head),
        sampler=PartitionSampler(0),
        pro=False,
        pro_clip=0.5,
        changes_only=True,
    )


def test_the_server_averages_heads_by_weight_and_seed_steps_as_before() -> None:
    head = {f"{WIRE_PREFIX}classifier.weight": torch.zeros(3, 4)}
    strategy = _strategy(head)
    updates = [
        {
            keys.SEED_INDICES: torch.tensor([1, 2]),
            keys.SEED_SCALARS: torch.tensor([1.0, 2.0]),
            f"{WIRE_PREFIX}classifier.weight": torch.full((3, 4), 1.0),
        },
        {
            keys.SEED_INDICES: torch.tensor([2]),
            keys.SEED_SCALARS: torch.tensor([4.0]),
            f"{WIRE_PREFIX}classifier.weight": torch.full((3, 4), 4.0),
        },
    ]
    strategy.aggregate(updates, [1.0, 3.0])
    torch.testing.assert_close(
        strategy.hybrid_tensors()[f"{WIRE_PREFIX}classifier.weight"],
        torch.full((3, 4), 0.25 * 1.0 + 0.75 * 4.0),
    )
    sums = strategy.model.trainable[keys.SEED_SUMS]
    assert float(sums[1]) == pytest.approx(0.25) and float(sums[2]) == pytest.approx(3.5)


def _reply(head: dict[str, torch.Tensor]) -> Message:
    arrays = {keys.SEED_INDICES: torch.tensor([0, 1]), keys.SEED_SCALARS: torch.tensor([0.1, 0.2])}
    metrics = MetricRecord(
        {
            keys.NUM_EXAMPLES: 10.0,
            keys.PARTITION_ID: 0.0,
            keys.TRAIN_LOSS: 1.0,
            keys.TRAIN_STEPS: 2.0,
            keys.TRAIN_SECONDS: 0.1,
            keys.PEAK_MEMORY_MB: 1.0,
        }
    )
    content = {keys.ARRAYS: tensors_to_record({**arrays, **head}), keys.METRICS: metrics}
    return message(RecordDict(content), src=7, reply_to="x")


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        ({"hybrid.w": torch.ones(3, 4)}, None),
        ({}, "expected seed-indices, seed-scalars, hybrid.w, got"),
        ({"hybrid.w": torch.ones(4, 3)}, "'hybrid.w' has shape (4, 3), expected (3, 4)"),
        ({"hybrid.w": torch.full((3, 4), float("nan"))}, "non-finite hybrid tensors"),
        ({"hybrid.w": torch.full((3, 4), 100.0)}, "hybrid update norm 346 exceeds"),
    ],
)
def test_a_replys_head_is_checked_against_what_was_sent(head: dict, reason: str | None) -> None:
    sent = {"hybrid.w": torch.zeros(3, 4)}
    metric_keys = train_metric_keys("zo", PLAIN)
    problem = check_seed_reply(_reply(head), 8, 4, metric_keys, 1e3, sent, max_update_norm=50.0)
    assert problem == reason if reason is None else reason in problem


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"mode": "lora", "strategy.name": "fedavg"}, "applies to mode = zo"),
        (
            {"model.name": "tiny-llama", "data.name": "chatterbot", "data.num-classes": 0},
            "needs a classification head",
        ),
        ({"dp.mode": "record", "dp.target-epsilon": 3.0}, "no record-level DP"),
        ({"zo.hybrid": "no_such_module"}, "no module named 'no_such_module'"),
    ],
)
def test_hybrid_settings_that_cannot_work_are_refused(extra: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        zo_model(parse_run_config({**HYBRID, **extra}))
    forget_zo_model()


def test_the_hybrid_state_is_an_fp32_copy_by_wire_key() -> None:
    _, hybrid, _ = _model()
    state = hybrid_state(hybrid)
    assert state.keys() == hybrid.keys()
    assert all(t.dtype == torch.float32 and not t.requires_grad for t in state.values())
