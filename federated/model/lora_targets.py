"""Which modules LoRA adapts: the run's ``lora.target-modules``, or for ``auto`` a choice by
architecture.

``auto`` takes a preset's own targets; for any other model, the attention projections that peft
knows for its ``model_type`` (peft's own table, plus the few families it lacks); for an
architecture neither knows, its ``q_proj`` and ``v_proj`` where it names them as Llama does (most
decoders since: OLMo 2, Granite, StarCoder2, SmolLM3, ...), else every linear layer
(``all-linear``). A model with nothing to adapt is
refused in one line. Training (``federated.model.workspace.wrapped``) and ``fedtune plan`` both
resolve here, so the plan counts the adapter that training builds.
"""

from __future__ import annotations

import re

from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn

from federated.model.lora import ALL_LINEAR, adaptable_linear_layers
from federated.model.presets import PRESETS

# Families that peft's table leaves out, by their attention projections: DistilBERT names them
# q_lin and v_lin; Phi-3 computes q, k and v in one fused layer.
EXTRA_TARGETS: dict[str, tuple[str, ...]] = {
    "distilbert": ("q_lin", "v_lin"),
    "phi3": ("qkv_proj",),
}


# The attention projections as Llama names them, which most later decoders kept.
LLAMA_TARGETS = ("q_proj", "v_proj")


def known_targets() -> dict[str, tuple[str, ...] | str]:
    """Every ``model_type`` with targets of its own: names, or a regular expression over module
    paths (peft gives one for multimodal models, to leave their vision tower alone)."""
    known: dict[str, tuple[str, ...] | str] = {
        model_type: targets if isinstance(targets, str) else tuple(targets)
        for model_type, targets in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.items()
    }
    return known | EXTRA_TARGETS


def lora_targets(model: nn.Module, name: str, setting: tuple[str, ...] | None) -> tuple[str, ...]:
    """The module names that LoRA adapts in ``model``.

    Parameters
    ----------
    model : nn.Module
        The base model, before wrapping.
    name : str
        Its ``model.name``: a preset, hub id or folder.
    setting : tuple of str or None
        The run's ``lora.target-modules`` (``LoraSettings.targets``); None for ``auto``.

    Returns
    -------
    tuple of str
        The setting as given; for ``auto`` the preset's targets, else the architecture's known
        targets, else Llama's attention projections where it has them, else
        ``("all-linear",)``.

    Raises
    ------
    ValueError
        For ``auto``, when the known targets match no module of ``model``, or the architecture is
        unknown and has no linear layer to adapt: one line naming the ``model_type``.
    """
    if setting is not None:
        return setting
    preset = PRESETS.get(name)
    if preset is not None:
        return preset.default_target_modules
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    known = known_targets().get(model_type) if model_type else None
    if known is not None:
        targets = _matching(model, known)
        if not targets:
            raise ValueError(
                f"model_type {model_type!r}: its LoRA targets {known!r} match no module of "
                f"{type(model).__name__}; set lora.target-modules to the modules to adapt"
            )
        return targets
    llama_like = _matching(model, LLAMA_TARGETS)
    if llama_like == LLAMA_TARGETS:
        return LLAMA_TARGETS
    if not adaptable_linear_layers(model):
        raise ValueError(
            f"model_type {model_type!r} has no known LoRA targets and no linear layer to adapt; "
            "set lora.target-modules to the modules to adapt"
        )
    return (ALL_LINEAR,)


def _matching(model: nn.Module, known: tuple[str, ...] | str) -> tuple[str, ...]:
    # peft's rules: a name matches a module path equal to it or ending in ".name"; a regular
    # expression must match the whole path (expanded here to the paths, which peft takes as names).
    paths = [module_name for module_name, _ in model.named_modules()]
    if isinstance(known, str):
        return tuple(path for path in paths if re.fullmatch(known, path))
    found = {t for t in known for path in paths if path == t or path.endswith(f".{t}")}
    return tuple(t for t in known if t in found)
