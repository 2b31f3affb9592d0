"""``fedtune plan`` for a model that is not on the machine: from its config.json alone, k-bit
weights counted as bitsandbytes stores them, gradient checkpointing keeping each block's input
and one block's recomputation, and a job that does not fit answered with jobs that do."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from federated.cli.main import main
from federated.config import parse_run_config
from federated.devices.job_plan import Device, Job, plan_job
from federated.devices.memory_estimate import estimate_memory
from federated.model.numerics import WEIGHT_BITS, Numerics

HIDDEN, FFN, LAYERS, HEADS, KV, VOCAB = 512, 1536, 4, 8, 2, 8000
BATCH, LENGTH, RANK = 4, 128, 8


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Llama-shaped model's config.json, as a hub repository has it (no weights anywhere)."""
    path = tmp_path_factory.mktemp("model") / "config.json"
    path.write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": HIDDEN,
                "intermediate_size": FFN,
                "num_hidden_layers": LAYERS,
                "num_attention_heads": HEADS,
                "num_key_value_heads": KV,
                "vocab_size": VOCAB,
                "tie_word_embeddings": False,
            }
        )
    )
    return path


def _job(config_file: Path, numerics: Numerics) -> Job:
    config = parse_run_config(
        {
            "model.name": str(config_file),
            "model.task": "causal-lm",
            "lora.rank": RANK,
            "lora.target-modules": "q_proj,v_proj",
            "lora.dropout": 0.0,
        }
    )
    return Job(config, BATCH, LENGTH, numerics)


def _block_linear_weights() -> int:
    head = HIDDEN // HEADS
    attention = HIDDEN * HIDDEN * 2 + HIDDEN * KV * head * 2  # q, o; k, v
    return LAYERS * (attention + 3 * HIDDEN * FFN)  # gate, up, down


def test_4bit_weights_are_the_quantized_blocks_and_the_rest_in_float32(config_file) -> None:
    quantized = estimate_memory(
        _job(config_file, Numerics()).config, BATCH, LENGTH, RANK, Numerics("bf16", "4bit")
    )
    full = estimate_memory(_job(config_file, Numerics()).config, BATCH, LENGTH, RANK)
    block = _block_linear_weights()
    # fp32: every weight at 4 bytes, the adapter's included.
    lora = LAYERS * RANK * (HIDDEN + HIDDEN + HIDDEN + KV * HIDDEN // HEADS)
    norms = (2 * LAYERS + 1) * HIDDEN
    rotary = HIDDEN // HEADS  # the rotary embedding's frequencies, and their original copy
    assert full.weights == 4 * (block + 2 * VOCAB * HIDDEN + lora + norms + rotary)
    # 4-bit: the blocks' linear layers at 4.127 bits; embeddings, head, norms and the adapter
    # in float32, as peft's k-bit preparation leaves them.
    rest = 2 * VOCAB * HIDDEN + lora + norms + rotary
    expected = block * WEIGHT_BITS["4bit"] / 8 + 4 * rest
    assert quantized.weights == pytest.approx(expected)
    assert full.optimizer == quantized.optimizer == 3 * 4 * lora


def test_gradient_checkpointing_keeps_the_block_inputs_and_one_block(config_file) -> None:
    plain = _job(config_file, Numerics("bf16")).estimate()
    checkpointed = _job(config_file, Numerics("bf16", gradient_checkpointing=True)).estimate()
    assert checkpointed.activations < plain.activations / 2
    # What the blocks are given (bf16 hidden states) is kept for each of them.
    assert checkpointed.activations > LAYERS * BATCH * LENGTH * HIDDEN * 2


def test_a_job_that_fits_says_so_and_exits_0(config_file, capsys) -> None:
    status = main(["plan", str(config_file), "--rank", "8", "--gpu-gb", "24"])
    out = capsys.readouterr().out
    assert status == 0
    params = _block_linear_weights() + 2 * VOCAB * HIDDEN + (2 * LAYERS + 1) * HIDDEN
    assert f"llama, {params / 1e9:.2f} B parameters" in out
    assert "job: LoRA rank 8, batch 8 x 256 tokens, fp32" in out
    assert "on a 24 GB GPU: fits" in out


def test_a_job_that_does_not_fit_lists_jobs_that_do(config_file, capsys) -> None:
    job = _job(config_file, Numerics())
    estimate = job.estimate()
    # Short of what the step's activations and transients take by a quarter: halving the
    # batch, among others, fits.
    budget = Device("x", 0, gpu=True).need(estimate) - 0.25 * (
        estimate.activations + estimate.transient
    )
    plan = plan_job(job, Device("small", budget, gpu=True))
    assert not plan.fits and plan.alternatives
    for what, changed, estimate in plan.alternatives:
        assert plan.device.need(estimate) <= budget, what
        assert changed.estimate().total == estimate.total
    args = ["plan", str(config_file), "--batch", str(BATCH), "--length", str(LENGTH)]
    status = main([*args, "--targets", "q_proj,v_proj", "--gpu-gb", str(budget / 1e9)])
    out = capsys.readouterr().out
    assert status == 1 and "does not fit" in out and "these fit:" in out


def test_a_model_that_cannot_be_read_is_one_line(tmp_path, capsys) -> None:
    missing = tmp_path / "nowhere" / "config.json"
    assert main(["plan", str(missing), "--memory-gb", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedtune plan: ") and "\n" not in err and "nowhere" in err


def test_the_planning_pages_commands_print_what_it_shows(capsys, monkeypatch) -> None:
    """docs/planning.md's commands, run as printed from the repository's root, print the
    output the page shows beneath each, and exit 0 when it fits, 1 when not."""
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "planning.md").read_text()
    shown = re.findall(r"```bash\n(fedtune plan [^\n]*)\n```\n\n```\n(.*?)\n```", page, re.S)
    assert len(shown) == 2
    monkeypatch.chdir(root)
    for command, output in shown:
        status = main(shlex.split(command)[1:])
        assert capsys.readouterr().out.rstrip("\n") == output
        assert status == (0 if ": fits," in output else 1)


def test_an_estimate_does_not_depend_on_those_made_before_it(config_file) -> None:
    """A k-bit estimate changes its model (float32 non-quantized weights, cast hooks): it must
    not change the skeleton other estimates share."""
    plain = _job(config_file, Numerics("bf16", gradient_checkpointing=True))
    four = _job(config_file, Numerics("bf16", "4bit", gradient_checkpointing=True))
    first = (plain.estimate(), four.estimate())
    eight = _job(config_file, Numerics("bf16", "8bit", gradient_checkpointing=True)).estimate()
    assert (plain.estimate(), four.estimate()) == first
    assert eight.activations == first[1].activations  # the same stand-in, other weight bits


def test_a_classifier_is_planned_with_its_head(capsys) -> None:
    assert main(["plan", "tiny-bert", "--labels", "3", "--batch", "4", "--memory-gb", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny-bert: bert, ") and ", classification\n" in out


def test_a_split_device_holds_the_embeddings_its_blocks_the_head_and_the_prompt(
    config_file,
) -> None:
    from federated.devices.split_estimate import estimate_split_memory

    def split_job(cut: int) -> Job:
        config = parse_run_config(
            {
                "model.name": str(config_file),
                "model.task": "causal-lm",
                "mode": "split",
                "strategy.name": "fedavg",
                "split.cut-layer": cut,
                "split.prompt-length": 8,
            }
        )
        return Job(config, BATCH, LENGTH, Numerics())

    per_block = _block_linear_weights() // LAYERS + 2 * HIDDEN  # and its two norms
    embeddings_and_head = 2 * VOCAB * HIDDEN  # untied
    for cut in (1, 2, 3):
        estimate = estimate_split_memory(split_job(cut).config, BATCH, LENGTH, Numerics())
        expected = embeddings_and_head + cut * per_block + HIDDEN + 8 * HIDDEN  # norm, prompt
        assert estimate.weights == 4 * expected
        assert estimate.optimizer == 3 * 4 * 8 * HIDDEN
        # The saved tensors hold the logits of every position, prompt included.
        assert estimate.activations >= BATCH * (LENGTH + 8) * VOCAB * 4
    assert split_job(3).estimate().job > split_job(1).estimate().job


def test_split_learning_is_offered_when_nothing_else_fits(config_file) -> None:
    from federated.devices.job_plan import _changes

    job, gpu = _job(config_file, Numerics()), Device("any", 0, gpu=True)
    others = [changed for _, changed in _changes(job) if changed.config.mode != "split"]
    budget = min(gpu.need(j.estimate()) for j in [job, *others]) - 1
    plan = plan_job(job, Device("small", budget, gpu=True))
    assert not plan.fits
    (offered,) = plan.alternatives  # one cut, not one per cut
    what, changed, estimate = offered
    assert changed.config.mode == "split" and "split.cut-layer=1" in what
    assert gpu.need(estimate) <= budget


@pytest.mark.parametrize(
    ("flags", "refused"),
    [
        (["--zeroth-order", "--precision", "bf16"], "'train.precision' = 'bf16': mode zo"),
        (["--dp-sgd", "--gradient-checkpointing"], "'train.gradient-checkpointing' = True"),
    ],
)
def test_a_job_a_run_refuses_is_refused_with_the_runs_words(
    config_file, capsys, flags, refused
) -> None:
    assert main(["plan", str(config_file), *flags, "--memory-gb", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fedtune plan: run config ") and refused in err


@pytest.mark.parametrize(
    ("mode", "numerics"),
    [
        ("lora", Numerics("bf16")),
        ("dp", Numerics()),
        ("zo", Numerics()),
        ("zo", Numerics("fp32", "8bit")),
    ],
)
def test_every_job_offered_is_one_a_run_takes(config_file, mode, numerics) -> None:
    from dataclasses import replace

    from federated.devices.job_plan import _changes
    from federated.devices.planner import as_mode

    job = _job(config_file, numerics)
    if mode == "dp":
        flat = {"model.name": str(config_file), "dp.mode": "record", "dp.noise-multiplier": 1.0}
        dp = parse_run_config(flat).dp
        job = replace(job, config=replace(job.config, dp=dp))
    elif mode == "zo":
        job = replace(job, config=as_mode(job.config, "zo"))
    changes = _changes(job)
    assert changes and all(changed.refusal() is None for _, changed in changes), [
        (what, changed.refusal()) for what, changed in changes if changed.refusal()
    ]
    # Tried against a budget nothing fits, the plan still only weighs what a run takes.
    plan = plan_job(job, Device("tiny", 1, gpu=False))
    assert not plan.fits and plan.alternatives == []
