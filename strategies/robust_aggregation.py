"""Robust replacements for the weighted mean of client deltas, for the strategies that average.

A strategy whose aggregate is the mean of its clients' deltas (fedavg, ffa-lora, fedsa-lora's
shared A, fedkseed's seed sums) can take instead:

- ``norm-bound``: every delta clipped to an L2 bound (by default the round's median delta norm),
  then the weighted mean (Sun et al., 2019, https://arxiv.org/abs/1911.07963);
- ``median``: the coordinate-wise median (Yin et al., 2018, https://arxiv.org/abs/1803.01498),
  as Flower's ``FedMedian`` takes it (numpy's median, the mean of the two middle values);
- ``trimmed-mean``: per coordinate, the mean after dropping the ``trim_fraction`` largest and
  smallest values (Yin et al.), Flower's ``trim_mean``;
- ``krum`` and ``multi-krum``: the client(s) whose deltas are closest to their n − f − 2 nearest
  neighbours (Blanchard et al., 2017, https://arxiv.org/abs/1703.02757), chosen by Flower's
  ``select_multikrum``; multi-krum averages the n − f it keeps.

The median, the trimmed mean and krum ignore the clients' weights: a claimed weight is one more
thing a hostile client controls. Every function is plain math on named tensors.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean
from flwr.serverapp.strategy.multikrum import select_multikrum

from federated.config import RobustSettings
from federated.privacy.clipping import clip_update, update_norm
from strategies.lora_factors import weighted_mean

Tensors = dict[str, torch.Tensor]


def _stacked(deltas: Sequence[Mapping[str, torch.Tensor]], key: str) -> np.ndarray:
    return torch.stack([d[key].double() for d in deltas]).numpy()


def _per_coordinate(deltas: Sequence[Mapping[str, torch.Tensor]], reduce) -> Tensors:
    return {
        key: torch.from_numpy(np.asarray(reduce(_stacked(deltas, key)))).to(deltas[0][key].dtype)
        for key in deltas[0]
    }


def norm_bounded_mean(
    deltas: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float], bound: float
) -> Tensors:
    """The weighted mean of the deltas, each clipped to L2 norm ``bound`` (0: the median norm)."""
    bound = bound or statistics.median(update_norm(d) for d in deltas)
    clipped = [clip_update(d, bound) for d in deltas]
    return {key: weighted_mean([c[key] for c in clipped], weights) for key in deltas[0]}


def coordinate_median(deltas: Sequence[Mapping[str, torch.Tensor]]) -> Tensors:
    return _per_coordinate(deltas, lambda stack: np.median(stack, axis=0))


def trimmed_mean(deltas: Sequence[Mapping[str, torch.Tensor]], trim_fraction: float) -> Tensors:
    return _per_coordinate(deltas, lambda stack: trim_mean(stack, trim_fraction))


def krum_choice(
    deltas: Sequence[Mapping[str, torch.Tensor]], byzantine: int, keep: int
) -> list[int]:
    """The indices of the ``keep`` deltas Krum scores best, assuming ``byzantine`` attackers."""
    contents = [
        RecordDict({"deltas": ArrayRecord({k: v.detach().cpu() for k, v in sorted(d.items())})})
        for d in deltas
    ]
    chosen = select_multikrum(contents, byzantine, keep)
    return [next(i for i, c in enumerate(contents) if c is pick) for pick in chosen]


def _krum(keep_all_but_byzantine: bool):
    def combine(deltas, weights, settings: RobustSettings) -> Tensors:
        f = settings.byzantine_clients
        keep = max(1, len(deltas) - f) if keep_all_but_byzantine else 1
        chosen = krum_choice(deltas, f, keep)
        kept, kept_weights = [deltas[i] for i in chosen], [weights[i] for i in chosen]
        return {key: weighted_mean([d[key] for d in kept], kept_weights) for key in deltas[0]}

    return combine


Combine = Callable[[Sequence[Mapping[str, torch.Tensor]], Sequence[float], RobustSettings], Tensors]

# The robust aggregates by the name ``robust.method`` gives them.
ROBUST_AGGREGATES: dict[str, Combine] = {
    "norm-bound": lambda deltas, weights, s: norm_bounded_mean(deltas, weights, s.norm_bound),
    "median": lambda deltas, weights, s: coordinate_median(deltas),
    "trimmed-mean": lambda deltas, weights, s: trimmed_mean(deltas, s.trim_fraction),
    "krum": _krum(keep_all_but_byzantine=False),
    "multi-krum": _krum(keep_all_but_byzantine=True),
}
