"""Sensitive sparse parameters: train the entries with the largest squared gradient.

Guo et al. (2024, "Zeroth-Order Fine-Tuning of LLMs with Extreme Sparsity") train only the most
sensitive 0.1% of the weights, found from squared gradients on a little data, and beat full
zeroth-order training: most of a gradient's mass sits on few entries. The server computes the
mask once, at start, on a calibration sample of the run's data set that it holds (first-order
gradients need the memory of training, which a zeroth-order device may lack), ranks the entries
of all matrices together, and ships each node the mask once, as flat indices per matrix; vectors
(norms, biases) train whole, as with ``sparse``. Floats differ across machines in their last
bits, so a mask computed on each device could differ; a shipped one cannot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import torch
from flwr.app import RecordDict

from federated.model.losses import loss_terms
from federated.protocol import message_keys as keys
from federated.protocol.wire import record_to_tensors, tensors_to_record
from federated.zo.perturbation import Target
from federated.zo.sums_sync import OutOfSync

MASK_PREFIX = "mask."  # the wire keys of a mask: this prefix and the matrix's parameter name

Mask = dict[str, torch.Tensor]  # parameter name -> sorted int32 flat indices


def squared_gradients(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], task: str
) -> dict[str, torch.Tensor]:
    """Σ over batches of each matrix's squared gradient of the batch's mean loss."""
    params = dict(sorted(model.named_parameters()))
    wanted = {name: p.requires_grad for name, p in params.items()}
    squares = {
        name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items() if p.dim() >= 2
    }
    try:
        for p in params.values():
            p.requires_grad_(True)
        model.eval()
        for batch in batches:
            model.zero_grad(set_to_none=True)
            loss_terms(model, batch, task).mean_loss().backward()
            for name in squares:
                if params[name].grad is not None:
                    squares[name] += params[name].grad.float().pow(2)
    finally:
        model.zero_grad(set_to_none=True)
        for name, p in params.items():
            p.requires_grad_(wanted[name])
    return squares


def top_entries(squares: Mapping[str, torch.Tensor], fraction: float) -> Mask:
    """The ``fraction`` of all matrix entries largest in ``squares``, ranked together."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"sensitive fraction must be in (0, 1], got {fraction}")
    names = sorted(squares)
    flat = torch.cat([squares[name].flatten() for name in names])
    keep = max(1, round(fraction * flat.numel()))
    chosen = torch.sort(torch.topk(flat, keep, sorted=False).indices).values
    mask: Mask = {}
    start = 0
    for name in names:
        end = start + squares[name].numel()
        lo, hi = torch.searchsorted(chosen, torch.tensor([start, end]))
        if hi > lo:
            mask[name] = (chosen[lo:hi] - start).to(torch.int32)
        start = end
    return mask


def sensitive_targets(model: torch.nn.Module, mask: Mapping[str, torch.Tensor]) -> list[Target]:
    """Every vector whole and every masked matrix at its mask's entries, by parameter name."""
    targets = []
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if param.dim() < 2:
            targets.append(Target(param))
        elif name in mask:
            targets.append(Target(param, mask[name].to(torch.int64)))
    unknown = sorted(set(mask) - {name for name, _ in model.named_parameters()})
    if unknown:
        raise ValueError(f"the mask names a matrix this model lacks: {unknown[0]!r}")
    return targets


def mask_digest(mask: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(mask):
        digest.update(name.encode())
        digest.update(mask[name].to(torch.int32).numpy().tobytes())
    return digest.hexdigest()


def mask_arrays(mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The mask as a message's tensors."""
    return {f"{MASK_PREFIX}{name}": indices for name, indices in mask.items()}


def client_mask(arrays: Mapping[str, torch.Tensor], state: RecordDict) -> Mask:
    """The mask a message's tensors bring (kept in the node state), else the one the node
    holds."""
    sent = {k.removeprefix(MASK_PREFIX): v for k, v in arrays.items() if k.startswith(MASK_PREFIX)}
    if sent:
        state[keys.ZO_MASK] = tensors_to_record(sent)
        return sent
    if keys.ZO_MASK not in state.array_records:
        raise OutOfSync(
            "this node holds no sensitive mask; the server sends it with the next round"
        )
    return record_to_tensors(state.array_records[keys.ZO_MASK])
