"""A LoRA model that can take on any global state: factors at any rank, and base-weight deltas.

Strategies differ in what the global model is: LoRA factors (fedavg), factors plus a dense delta
merged into the frozen base weights (fedex-lora), a delta alone (flora, flexlora). One process
serves many simulated clients in turn, so each load restores the original base weights first and
sets every trainable tensor: nothing of one client survives into the next.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from peft import PeftModel

from federated.model.lora import (
    LoraPair,
    base_weight_key,
    factor_of,
    in_weight_layout,
    load_trainable_state,
    lora_pairs,
    trainable_parameters,
    trainable_state,
)


def fit_rank(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Take the leading part of ``tensor`` along every dimension where it is larger than ``shape``.

    Factors sent at a higher rank are ordered so that their prefix is what a lower-rank client
    should start from (flexlora's singular vectors, hetlora's padding).
    """
    if tensor.dim() != len(shape) or any(
        have < want for have, want in zip(tensor.shape, shape, strict=True)
    ):
        raise ValueError(f"a tensor of shape {tuple(tensor.shape)} cannot fill {tuple(shape)}")
    return tensor[tuple(slice(0, n) for n in shape)]


def factors_at_rank(start: Mapping[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """The factors a client of ``rank`` loads from ``start``: their leading ``rank`` part."""
    cut = {}
    for key, value in start.items():
        factor, shape = factor_of(key), list(value.shape)
        if factor is not None:
            shape[factor[1]] = min(rank, shape[factor[1]])
        cut[key] = fit_rank(value, torch.Size(shape))
    return cut


@dataclass
class LocalModel:
    """A peft model, its tokenizer, its seeded initial trainable state and original base weights."""

    model: PeftModel
    tokenizer: Any
    rank: int
    initial: dict[str, torch.Tensor]
    original_base: dict[str, torch.Tensor]

    @classmethod
    def wrap(cls, model: PeftModel, tokenizer: Any, rank: int) -> LocalModel:
        initial = trainable_state(model)
        params = dict(model.named_parameters())
        pairs, _ = lora_pairs(initial)
        # k-bit base weights (bitsandbytes' packed integers) take no delta: nothing to restore.
        weights = {p.module: params[base_weight_key(p.module)] for p in pairs}
        original = {
            module: weight.detach().clone()
            for module, weight in weights.items()
            if weight.is_floating_point()
        }
        return cls(model, tokenizer, rank, initial, original)

    @property
    def pairs(self) -> list[LoraPair]:
        return lora_pairs(self.initial)[0]

    def load(
        self,
        trainable: Mapping[str, torch.Tensor],
        base_delta: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Set base weights to original + delta, and trainable tensors to ``trainable``.

        Tensors at a higher rank are cut to this model's rank; any trainable tensor not given keeps
        its seeded initial value (a shared frozen A, a zero B).
        """
        base_delta = base_delta or {}
        unknown = set(base_delta) - set(self.original_base)
        if unknown:
            raise ValueError(
                f"base delta for modules this model does not adapt: {sorted(unknown)[:3]}"
            )
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for pair in self.pairs:
                if pair.module not in self.original_base:
                    continue
                weight = params[base_weight_key(pair.module)]
                original = self.original_base[pair.module]
                delta = base_delta.get(pair.module)
                if delta is None:
                    weight.copy_(original)
                else:
                    delta = in_weight_layout(self.model, pair.module, delta)
                    weight.copy_(original + delta.to(original.dtype))
        unexpected = set(trainable) - set(self.initial)
        if unexpected:
            raise ValueError(f"unexpected trainable tensors: {sorted(unexpected)[:3]}")
        state = dict(self.initial)
        for key, tensor in trainable.items():
            state[key] = fit_rank(tensor, self.initial[key].shape)
        load_trainable_state(self.model, state)

    def fresh_factors(self, seed: int) -> dict[str, torch.Tensor]:
        """New factors as peft initialises them (Kaiming-uniform A, zero B), from ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        fresh = {}
        for pair in self.pairs:
            a = torch.empty_like(self.initial[pair.a_key])
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
            fresh[pair.a_key] = a
            fresh[pair.b_key] = torch.zeros_like(self.initial[pair.b_key])
        return fresh

    @contextmanager
    def a_frozen(self, frozen: bool) -> Iterator[None]:
        """Within the block no A factor takes a gradient if ``frozen`` (ffa-lora trains B alone)."""
        a_keys = {pair.a_key for pair in self.pairs}
        a_params = [p for key, p in trainable_parameters(self.model).items() if key in a_keys]
        for param in a_params:
            param.requires_grad_(not frozen)
        try:
            yield
        finally:
            for param in a_params:
                param.requires_grad_(True)
