"""Will a training job fit a device, and if not, what would: the question ``fedtune plan`` answers
for a model that need not be on the machine (its config is enough; the estimate runs on torch's
meta device, ``federated.devices.memory_estimate``).

A CPU device holds the client's runtime beside the job (measured on this machine). A GPU holds
the job's tensors (what ``torch.cuda.max_memory_allocated`` counts) plus the CUDA context, which
the allocator does not count; ``CUDA_CONTEXT_BYTES`` is that context's typical size, not
measured here (this machine has no GPU; ``benchmarks/accelerator`` measures it where one is).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from federated.config import ConfigError, RunConfig
from federated.config.checks import check_numerics
from federated.devices.memory_estimate import MemoryEstimate, estimate_memory
from federated.devices.planner import as_mode
from federated.devices.split_estimate import estimate_split_memory, split_skeleton
from federated.model.numerics import PLAIN_FP32, Numerics
from federated.tasks import TASK_CAUSAL_LM

CUDA_CONTEXT_BYTES = 0.5e9


@dataclass(frozen=True)
class Device:
    """Where the job runs: ``memory_bytes`` for it, on a GPU or in a CPU's RAM."""

    name: str
    memory_bytes: float
    gpu: bool

    def need(self, estimate: MemoryEstimate) -> float:
        """What ``estimate`` takes on this device."""
        if self.gpu:
            return estimate.job + CUDA_CONTEXT_BYTES
        return estimate.total


@dataclass(frozen=True)
class Job:
    """One client's training step: the run config's model, mode, LoRA and privacy, this batch
    of sequences of this length, the base model held as ``numerics`` says."""

    config: RunConfig
    batch: int
    length: int
    numerics: Numerics

    @property
    def rank(self) -> int:
        return self.config.lora.rank

    def refusal(self) -> str | None:
        """Why a run would refuse this job's numerics for its mode, or None: the planner offers
        only jobs that ``fedtune run`` takes."""
        n, config = self.numerics, self.config
        held = replace(
            config,
            train=replace(
                config.train,
                precision=n.precision,
                gradient_checkpointing=n.gradient_checkpointing,
            ),
            model=replace(config.model, quantization=n.quantization),
        )
        try:
            check_numerics(held)
        except ConfigError as err:
            return str(err)
        return None

    def estimate(self) -> MemoryEstimate:
        if self.config.mode == "split":
            return estimate_split_memory(self.config, self.batch, self.length, self.numerics)
        return estimate_memory(self.config, self.batch, self.length, self.rank, self.numerics)

    def describe(self) -> str:
        if self.config.mode == "split":
            what = f"split learning, {self.config.split.cut_layer} block(s) on the device"
        elif self.config.mode == "zo":
            what = "zeroth-order"
        else:
            what = f"LoRA rank {self.rank}" + (", DP-SGD" if self.config.dp.record_level else "")
        return f"{what}, batch {self.batch} x {self.length} tokens, {self.numerics.describe()}"


@dataclass(frozen=True)
class JobPlan:
    """The job's estimate on the device, and the changed jobs that fit when it does not."""

    job: Job
    device: Device
    estimate: MemoryEstimate
    alternatives: list[tuple[str, Job, MemoryEstimate]]

    @property
    def need(self) -> float:
        return self.device.need(self.estimate)

    @property
    def fits(self) -> bool:
        return self.need <= self.device.memory_bytes


def _changes(job: Job) -> list[tuple[str, Job]]:
    """Jobs that take less memory than ``job``, each with what changed, cheapest change first:
    recomputing activations, then 4-bit weights, then smaller batches, then zeroth-order."""
    n, changes = job.numerics, []
    # Zeroth-order steps run no backward and compare losses in fp32; DP-SGD's per-example
    # hooks cannot take a recomputed forward.
    recompute = job.config.mode == "lora" and not job.config.dp.record_level
    if recompute and not n.gradient_checkpointing:
        changes.append(
            (
                "gradient checkpointing",
                replace(job, numerics=replace(n, gradient_checkpointing=True)),
            )
        )
    if n.quantization != "4bit":
        precision = "bf16" if n.precision == "fp32" and job.config.mode != "zo" else n.precision
        four = replace(
            n, quantization="4bit", precision=precision, gradient_checkpointing=recompute
        )
        what = f"4-bit weights ({precision} compute)" + (
            ", gradient checkpointing" if recompute else ""
        )
        changes.append((what, replace(job, numerics=four)))
    batch = job.batch // 2
    while batch >= 1:
        changes.append((f"batch {batch}", replace(job, batch=batch)))
        batch //= 2
    if job.config.mode == "lora" and not job.config.dp.record_level:
        # Zeroth-order steps compare two losses a tiny step apart: in fp32, with no backward.
        zo = replace(n, precision="fp32", gradient_checkpointing=False)
        what = "zeroth-order steps on the LoRA factors"
        what += ", fp32" if n.precision != "fp32" else ""
        changes.append((what, replace(job, config=as_mode(job.config, "zo"), numerics=zo)))
    return changes + _split_changes(job)


def _split_changes(job: Job) -> list[tuple[str, Job]]:
    """Split learning (``docs/split.md``), the last resort of a causal LM whose whole forward
    does not fit: at cuts that keep most blocks on the server, the largest batch first and at
    each batch the deepest cut."""
    config = job.config
    if config.task != TASK_CAUSAL_LM or config.dp.record_level or job.numerics.quantized:
        return []
    blocks = split_skeleton(config).lm.config.num_hidden_layers
    split_run = replace(config, mode="split", strategy=replace(config.strategy, name="fedavg"))
    changes = []
    batch = job.batch
    while batch >= 1:
        for cut in range(max(1, blocks // 4), 0, -1):
            changed = replace(split_run, split=replace(config.split, cut_layer=cut))
            what = (
                f"split learning (mode=split split.cut-layer={cut}), batch {batch}: the "
                f"embeddings, {cut} of {blocks} blocks and the LM head on the device"
            )
            changes.append((what, replace(job, config=changed, batch=batch, numerics=PLAIN_FP32)))
        batch //= 2
    return changes


def plan_job(job: Job, device: Device, alternatives: int = 3) -> JobPlan:
    """``job`` on ``device``; when it does not fit, up to ``alternatives`` changed jobs that
    do, in the order ``_changes`` tries them, each one a run would take."""
    refusal = job.refusal()
    if refusal:
        raise ConfigError(refusal)
    estimate = job.estimate()
    plan = JobPlan(job, device, estimate, [])
    if plan.fits:
        return plan
    found = []
    for what, changed in _changes(job):
        if changed.config.mode == "split" and any(j.config.mode == "split" for _, j, _ in found):
            continue  # one cut is offered: the deepest that fits
        if changed.refusal():
            continue
        changed_estimate = changed.estimate()
        if device.need(changed_estimate) <= device.memory_bytes:
            found.append((what, changed, changed_estimate))
            if len(found) == alternatives:
                break
    return replace(plan, alternatives=found)
