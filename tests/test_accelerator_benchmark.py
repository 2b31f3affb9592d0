"""benchmarks/accelerator: its smallest dry run writes every part, its comparison of estimate and
measurement is the one its docs describe, and what it runs on the GPU machine imports without the
packages that machine lacks (Flower; bitsandbytes until a 4-bit model is built)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks.accelerator.memory import compare, estimate_row
from benchmarks.accelerator.models import TINY
from benchmarks.accelerator.run import main
from federated.devices import memory_estimate
from federated.devices.job_plan import CUDA_CONTEXT_BYTES
from federated.devices.memory_estimate import HEADROOM_FRACTION, JOB_OVERHEAD_BYTES
from federated.model.numerics import Numerics
from tests.simulate import ROOT

PROJECT = ("benchmarks", "federated", "client", "server", "strategies", "simulation")
ENTRY = "benchmarks.accelerator.run"


def test_the_quick_dry_run_writes_every_part(tmp_path: Path) -> None:
    results = main(["--quick", "--out", str(tmp_path)])

    assert json.loads((tmp_path / "dry_run.json").read_text()) == json.loads(
        json.dumps(results, default=str)
    )
    assert (tmp_path / "dry_run.png").stat().st_size > 0
    assert results["errors"] == {}
    for row in results["memory"]:
        # The plan a GPU is promised is the tensors compared, plus overhead, headroom, context.
        planned = (row["estimate_tensors_gb"] * 1e9 + JOB_OVERHEAD_BYTES) * (
            1 + HEADROOM_FRACTION
        ) + CUDA_CONTEXT_BYTES
        assert row["planned_gb"] * 1e9 == pytest.approx(planned)
        if "skipped" in row:
            assert row["quantization"] == "4bit" and "bitsandbytes" in row["skipped"]
            continue
        # A random model's next-token loss is that of a uniform guess over the vocabulary.
        assert row["loss"] == pytest.approx(math.log(49152), abs=0.1)
        assert "peak_allocated_gb" not in row  # no allocator to read on a CPU
    assert {r["trainer"] for r in results["step_time"]} == {
        "lora",
        "dp-sgd",
        "zo-dense",
        "zo-low-rank",
    }
    assert all(r["seconds_per_step"] > 0 for r in results["step_time"])
    for row in results["replay"]:  # CPU against CPU: the same weights, though replay moved them
        assert row["draw_bit_exact"] and row["perturb_bit_exact"] and row["replay_bit_exact"]
        assert row["replay_max_abs_diff"] == 0 < row["replay_max_abs_change"]


def test_a_measured_round_is_set_against_the_estimates_tensors() -> None:
    row = {"estimate_tensors_gb": 10.0, "estimate_weights_gb": 4.0, "planned_gb": 12.0}
    measured = {"held_before_gb": 4.4, "peak_allocated_gb": 10.5, "peak_reserved_gb": 11.0}

    near = compare(row, measured, context_gb=0.6)
    far = compare(row, {**measured, "peak_allocated_gb": 11.5}, context_gb=1.5)

    assert near["measured_over_estimate"] == pytest.approx(1.05)
    assert near["weights_measured_over_estimate"] == pytest.approx(1.1)
    assert near["within_10_percent"] and near["plan_covers_reserved_and_context"]
    assert far["measured_over_estimate"] == pytest.approx(1.15)
    assert not far["within_10_percent"] and not far["plan_covers_reserved_and_context"]


def _path(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _import_time_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """The import statements that run when the module is imported: not those in functions or
    under ``if TYPE_CHECKING``."""
    found = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                found += _import_time_statements(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            handlers = [s for h in node.handlers for s in h.body]
            found += _import_time_statements(node.body + handlers + node.orelse)
        elif isinstance(node, ast.ClassDef):
            found += _import_time_statements(node.body)
    return found


def _imported(module: str) -> set[str]:
    """Every module that importing ``module`` imports, by name, its packages' own included."""
    names = set()
    for node in _import_time_statements(ast.parse(_path(module).read_text()).body):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        else:
            assert node.level == 0, f"{module}: a relative import"
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n.split(".")[0] not in PROJECT or _path(n)}


def test_what_the_gpu_machine_runs_imports_without_flower_or_bitsandbytes() -> None:
    seen, waiting, outside = set(), [ENTRY], set()
    while waiting:
        module = waiting.pop()
        parts = module.split(".")
        for name in (".".join(parts[:k]) for k in range(1, len(parts) + 1)):
            if name in seen:
                continue
            seen.add(name)
            if name.split(".")[0] not in PROJECT:
                outside.add(name.split(".")[0])
            elif _path(name):
                waiting += sorted(_imported(name))

    assert "federated.zo.trainer" in seen and "client.dp_lora_trainer" in seen
    assert outside.isdisjoint({"flwr", "bitsandbytes"}), sorted(outside & {"flwr", "bitsandbytes"})


def test_a_gpu_plan_does_not_measure_the_client_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    # Measuring it imports Flower's ClientApp runtime, which the GPU machine does not have.
    def no_runtime() -> float:
        raise AssertionError("the client runtime was measured")

    monkeypatch.setattr(memory_estimate, "runtime_bytes", no_runtime)

    row = estimate_row(TINY, Numerics("bf16", "4bit", True), batch=2, length=16)

    assert row["planned_gb"] > row["estimate_tensors_gb"] > row["estimate_weights_gb"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CPU against CUDA needs a CUDA GPU")
def test_a_seed_draws_the_same_perturbation_on_cpu_and_cuda() -> None:
    """Seed replay between a CPU client and a CUDA server: the draw is the CPU generator's on
    both, so it is equal bit for bit; applying and replaying it is the devices' arithmetic,
    equal to float32's rounding of the change it makes."""
    from benchmarks.accelerator.replay_check import replay_rows

    rows = list(replay_rows(((TINY, "lora", 64), (TINY, "full", 16)), torch.device("cuda")))
    assert rows and all(row["draw_bit_exact"] for row in rows), rows
    for row in rows:
        assert row["perturb_max_abs_diff"] <= 1e-6, row
        assert row["replay_max_abs_diff"] <= 1e-5 * max(1.0, row["replay_max_abs_change"]), row
