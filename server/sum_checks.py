"""Whether an unmasked SecAgg+ sum can come from clients that followed the protocol.

The server never sees one client's vector, so a client that adds anything to its own (2^31 to
every entry, say) hides inside the sum: only the sum can be checked. Every honest client's
vector obeys bounds the run config fixes: its weight in [0, 1] (exactly 1 under client-level
DP), each quantized entry in [0, 2^bits), its count bit and statistics under their caps, its
update within AdamW's per-weight bound and ``server.max-update-norm`` (within the clip bound
under client-level DP; under distributed DP, its rounded update within Δ plus its noise). The
sum of ``count`` of them obeys ``count`` times those bounds, less nothing, so a sum outside them
was tampered with. Which client did it the sum cannot tell: that takes a proof of each input's
bound inside secure aggregation (ACORN, Bell et al. 2023; RoFL, Lycklama et al. 2023).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from federated.config import RunConfig
from federated.privacy.distributed_noise import DistributedPlan
from federated.protocol import message_keys as keys
from federated.secagg import metric_sums
from federated.secagg.protocol import SecureSum, VectorLayout
from server.update_bounds import move_bound
from strategies.distributed_dp import secure_layout
from strategies.strategy_wrapper import Strategy

# Chi-square tail of the summed noise's norm (Laurent and Massart, 2000): exceeded with
# probability under e^-40 by honest clients' discrete Gaussian noise, which is sub-Gaussian.
_NOISE_TAIL = 40.0


@dataclass(frozen=True)
class UpdateBounds:
    """What one honest client's weighted update w·Δ can be, in the update's units."""

    per_weight: Mapping[str, float]  # tensor -> largest |entry| (absent: no bound)
    norm: float  # largest L2 norm over all tensors
    weight_exact: bool  # every client weighs exactly 1 (client-level DP)


def honest_bounds(strategy: Strategy, config: RunConfig, server_round: int) -> UpdateBounds:
    """What one honest client's update can be this round: AdamW's per-weight bound on every
    tensor that starts from what the server sent (zeroth-order: the steps' scalars, summed per
    seed), in norm ``server.max-update-norm``, or the clip bound under client-level DP."""
    steps = config.train.local_steps
    if strategy.reply_kind != "tensors":  # seed sums: each step's scalar, at most this
        scalar = config.server.max_zo_scalar / (1.0 - config.zo.momentum)
        per_seed = steps * scalar if steps > 0 else math.inf
        per_weight, norm = {keys.SEED_SUMS: per_seed}, per_seed
    else:
        payload = strategy.train_payload()
        bound = move_bound(config, server_round, payload.plan, strategy.pairs, payload.trainable)
        names = [name for name, _ in secure_layout(strategy, config)]
        per_weight = {n: bound.per_weight for n in names if bound and n not in bound.exempt}
        norm = config.server.max_update_norm
    clip = strategy.clip_bound  # client-level DP: each client clipped and weighs 1
    return UpdateBounds(per_weight, norm if clip is None else clip, clip is not None)


def masked_sum_problem(
    total: np.ndarray,
    parts: SecureSum,
    shape: VectorLayout,
    count: int,
    config: RunConfig,
    bounds: UpdateBounds,
) -> str | None:
    """Why the unmasked integer sum of ``count`` clients' vectors (``parts``: it split, which
    the caller aggregates from) cannot be theirs, or None."""
    s = config.secagg
    problem = integer_problem(total, shape, count, s.quantization_bits, bounds.weight_exact)
    if problem or not shape.spec:
        return problem
    step = 2 * s.clipping_range / ((1 << s.quantization_bits) - 1)
    return update_problem(parts.tensors, parts.weight, count, bounds, step)


def integer_problem(
    total: np.ndarray, shape: VectorLayout, count: int, bits: int, weight_exact: bool
) -> str | None:
    """Why the unmasked integer sum of ``count`` vectors is out of their range, or None."""
    total = np.asarray(total, dtype=np.int64)
    weight, top = int(total[0]), (1 << bits) - 1
    full = metric_sums.weight_entry(1.0)
    if weight_exact and weight != count * full:
        return f"its weights sum to {weight / full:.6g}; {count} clients weigh {count}"
    if not 0 <= weight <= count * full:
        return f"its weights sum to {weight / full:.6g}; {count} clients weigh at most {count}"
    floats = total[1 : 1 + shape.floats]
    if floats.size and int(floats.max()) > count * top:
        return (
            f"an entry sums to {int(floats.max())}; {count} clients' quantized entries reach "
            f"at most {count * top}"
        )
    after = 1 + shape.floats
    if shape.count_bit and not 0 <= int(total[after]) <= count:
        return f"its clipping count is {int(total[after])}; {count} clients count at most {count}"
    extra = total[after + int(shape.count_bit) :]
    if extra.size and int(extra.max()) > count * metric_sums.ENTRY_CAP:
        return f"a statistic sums to {int(extra.max())}, beyond {count} clients' caps"
    return None


def update_problem(
    sums: Mapping[str, torch.Tensor], weight: float, count: int, bounds: UpdateBounds, step: float
) -> str | None:
    """Why Σw·Δ (after dequantizing) is more than ``count`` honest clients weighing ``weight``
    in all can move, allowing each client one quantization ``step`` an entry; or None."""
    entries = sum(t.numel() for t in sums.values())
    for name, tensor in sums.items():
        limit = bounds.per_weight.get(name)
        moved = float(tensor.abs().max()) if tensor.numel() else 0.0
        if limit is not None and moved > weight * limit * (1 + 1e-4) + count * step:
            return (
                f"'{name}' moves a weight by {moved:.3g} summed; clients weighing {weight:.4g} "
                f"move one by at most {weight * limit:.3g}"
            )
    norm = _norm(sums)
    scale = count if bounds.weight_exact else weight
    limit = scale * bounds.norm * (1 + 1e-4) + count * step * math.sqrt(entries)
    if norm > limit:
        return f"its update has L2 norm {norm:.4g}; its clients' updates sum to at most {limit:.4g}"
    return None


def distributed_problem(
    sums: Mapping[str, torch.Tensor], count: int, plan: DistributedPlan
) -> str | None:
    """Why the noised sum is beyond ``count`` clients' rounded updates (L2 at most Δ each) plus
    their noise (its norm's tail bound), in the update's units; or None."""
    norm = _norm(sums) / plan.granularity
    d = plan.dimension
    noise = plan.local_std * math.sqrt(
        count * (d + 2 * math.sqrt(d * _NOISE_TAIL) + 2 * _NOISE_TAIL)
    )
    limit = count * plan.bound + noise
    if norm > limit:
        return f"its noised update has norm {norm:.4g} integers; {count} clients' reach {limit:.4g}"
    return None


def _norm(tensors: Mapping[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors.values()))
