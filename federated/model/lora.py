"""LoRA adapters: wrapping, the trainable state, and the meaning of peft's parameter names.

This is the one module that knows how peft names LoRA tensors. Everything else sees a flat mapping
``key -> tensor`` whose keys are those of ``peft.get_peft_model_state_dict`` (no adapter name, e.g.
``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``), and asks :func:`lora_pairs`
which keys belong together.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from federated.model.seeded_peft import seeded_peft_model
from federated.model.verbalizer import VerbalizedClassifier
from federated.tasks import TASK_CAUSAL_LM, TASK_CLASSIFICATION

ALL_LINEAR = "all-linear"
_LORA_A = "lora_A"
_LORA_B = "lora_B"
_PEFT_TASK_TYPES = {TASK_CAUSAL_LM: TaskType.CAUSAL_LM, TASK_CLASSIFICATION: TaskType.SEQ_CLS}
# Names transformers gives the classification head (BERT-like models and decoder-only models),
# and the layer DistilBERT puts before its head, as new as the head itself: peft matches
# modules_to_save by suffix, so "classifier" trains "pre_classifier" too.
HEAD_NAMES = ("classifier", "score", "pre_classifier")


def wrap_with_lora(
    model: PreTrainedModel,
    task: str,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: tuple[str, ...],
    seed: int = 0,
) -> PeftModel:
    """Wrap a base model with one LoRA adapter; only the adapter (and a classifier head) trains.

    Parameters
    ----------
    model : PreTrainedModel
        The base model; peft modifies it in place.
    task : str
        ``TASK_CAUSAL_LM`` or ``TASK_CLASSIFICATION``. For classification the head
        (``classifier`` or ``score``, with DistilBERT's ``pre_classifier``) is trained in full
        through peft's ``modules_to_save``.
    rank, alpha, dropout : int, float, float
        LoRA rank r, scaling numerator (the update is scaled by alpha / r) and dropout on its input.
    target_modules : tuple of str
        Module names matched as peft does (exact name or ``.name`` suffix), or ``("all-linear",)``:
        every linear (and ``Conv1D``) layer but the output layer and the classification head.
    seed : int
        Seed of the random initialisation of the A factors (B starts at zero, so the wrapped model
        computes exactly what the base model does).

    Returns
    -------
    PeftModel
        The wrapped model.

    Raises
    ------
    ValueError
        On a bad setting, a target that matches no module, or a target that matches an embedding
        layer (per-sample gradients for differential privacy cannot handle LoRA on embeddings).
    """
    if task not in _PEFT_TASK_TYPES:
        raise ValueError(f"task {task!r} is not one of {', '.join(_PEFT_TASK_TYPES)}")
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"lora rank must be an integer >= 1, got {rank!r}")
    if not alpha > 0:
        raise ValueError(f"lora alpha must be > 0, got {alpha!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"lora dropout must be in [0, 1), got {dropout!r}")
    targets = _check_targets(model, target_modules)
    # A causal LM classifying by label words has no head: its classes are rows of the output
    # layer, which stays frozen, and peft wraps it as a plain module.
    verbalized = isinstance(model, VerbalizedClassifier)
    heads = _classification_head(model) if task == TASK_CLASSIFICATION and not verbalized else ()
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        task_type=None if verbalized else _PEFT_TASK_TYPES[task],
        bias="none",
    )
    # For SEQ_CLS peft itself puts "classifier" and "score" in modules_to_save (naming it here
    # too would only duplicate the entries); _check_trainable_names confirms the head trains.
    peft_model = seeded_peft_model(model, config, seed)
    # A head copied from bf16 or fp16 base weights trains, is sent and aggregated in float32,
    # as the LoRA factors are (peft casts those itself).
    for param in peft_model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    _check_trainable_names(peft_model, heads)
    return peft_model


def trainable_state(model: PeftModel) -> dict[str, torch.Tensor]:
    """Return every trainable tensor of the active adapter, as detached fp32 CPU copies.

    Parameters
    ----------
    model : PeftModel
        A model made by :func:`wrap_with_lora`.

    Returns
    -------
    dict of str to Tensor
        Keys as in ``peft.get_peft_model_state_dict`` (without the adapter name), sorted.
    """
    return {
        key: param.detach().to(device="cpu", dtype=torch.float32, copy=True)
        for key, param in trainable_parameters(model).items()
    }


def load_trainable_state(model: PeftModel, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a trainable state into the model, in place.

    The parameters keep their identity (no re-allocation), so references held elsewhere, such as
    an optimizer's, stay attached; values are cast to each parameter's dtype and device.

    Parameters
    ----------
    model : PeftModel
        A model made by :func:`wrap_with_lora`.
    state : Mapping of str to Tensor
        Exactly the keys and shapes that :func:`trainable_state` returns for ``model``.

    Raises
    ------
    ValueError
        Naming the first missing or unexpected key, or a key whose shape or type is wrong;
        nothing is copied in that case.
    """
    params = trainable_parameters(model)
    missing = sorted(params.keys() - state.keys())
    if missing:
        raise ValueError(f"trainable state lacks {len(missing)} key(s), first {missing[0]!r}")
    unexpected = sorted(state.keys() - params.keys())
    if unexpected:
        raise ValueError(
            f"trainable state has {len(unexpected)} unexpected key(s), first {unexpected[0]!r}"
        )
    for key, param in params.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(f"trainable state {key!r} is not a floating-point tensor")
        if value.shape != param.shape:
            raise ValueError(
                f"trainable state {key!r} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(param.shape)}"
            )
    with torch.no_grad():
        for key, param in params.items():
            param.copy_(state[key])


@dataclass(frozen=True)
class LoraPair:
    """The two LoRA factors of one adapted module: its update is ``B @ A`` (times alpha / r).

    Attributes
    ----------
    module : str
        The adapted module's key prefix, e.g. ``base_model.model.model.layers.0.self_attn.q_proj``.
    a_key, b_key : str
        Keys of the A factor (shape r x in) and the B factor (shape out x r).
    """

    module: str
    a_key: str
    b_key: str


def factor_of(key: str) -> tuple[str, int] | None:
    """(adapted module, rank dimension) of a LoRA factor key: 0 for A [r, d_in], 1 for B
    [d_out, r]; None for any other tensor. Works on any subset of keys, unlike lora_pairs."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[-2] in (_LORA_A, _LORA_B) and parts[-1] == "weight":
        return ".".join(parts[:-2]), 0 if parts[-2] == _LORA_A else 1
    return None


def lora_pairs(keys: Iterable[str]) -> tuple[list[LoraPair], list[str]]:
    """Group state keys into the (A, B) factor pairs of each adapted module.

    Parameters
    ----------
    keys : iterable of str
        Keys as returned by :func:`trainable_state`.

    Returns
    -------
    pairs : list of LoraPair
        One per adapted module, sorted by module name.
    others : list of str
        The keys that are not LoRA factors (such as a classifier head), sorted.

    Raises
    ------
    ValueError
        When a factor lacks its partner, or a key looks like a LoRA tensor but is not an A or B
        weight (an adapter name left in the key, or a LoRA variant this module does not handle).
    """
    factors: dict[str, dict[str, str]] = {}
    others: list[str] = []
    for key in keys:
        parts = key.split(".")
        if len(parts) >= 3 and parts[-2] in (_LORA_A, _LORA_B) and parts[-1] == "weight":
            module = ".".join(parts[:-2])
            factors.setdefault(module, {})[parts[-2]] = key
        elif any(part.startswith("lora_") for part in parts):
            raise ValueError(f"key {key!r} is a LoRA tensor but not a '<module>.lora_A/B.weight'")
        else:
            others.append(key)
    pairs = []
    for module in sorted(factors):
        found = factors[module]
        for factor in (_LORA_A, _LORA_B):
            if factor not in found:
                raise ValueError(f"module {module!r} has no {factor} factor among the keys")
        pairs.append(LoraPair(module=module, a_key=found[_LORA_A], b_key=found[_LORA_B]))
    return pairs, sorted(others)


def base_weight_key(module: str) -> str:
    """The parameter name of the frozen weight under an adapted module (``LoraPair.module``)."""
    return f"{module}.base_layer.weight"


def in_weight_layout(model: nn.Module, module: str, delta: torch.Tensor) -> torch.Tensor:
    """A dense (out, in) delta, such as B·A, in the layout of ``module``'s base weight: transposed
    where the layer stores (in, out), as GPT-2's ``Conv1D`` does (peft's ``fan_in_fan_out``)."""
    return delta.T if getattr(model.get_submodule(module), "fan_in_fan_out", False) else delta


def adapted_names(model: PeftModel) -> list[str]:
    """The names of the modules the adapter is on (a path's last part), each once, in the
    model's order: what ``lora.target-modules`` came to."""
    return list(
        dict.fromkeys(
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, LoraLayer)
        )
    )


def save_adapter(model: PeftModel, path: Path) -> None:
    """Save the adapter in peft's own format, loadable with ``PeftModel.from_pretrained``.

    Parameters
    ----------
    model : PeftModel
        A model made by :func:`wrap_with_lora`.
    path : Path
        Folder to write ``adapter_config.json`` and ``adapter_model.safetensors`` into.
    """
    # Embeddings are never adapted here and the vocabulary never resized; "auto" would look for
    # the base model's config, on the hub if need be, to find that out.
    model.save_pretrained(str(path), save_embedding_layers=False)


def adaptable_linear_layers(model: nn.Module) -> list[str]:
    """The linear layers that ``all-linear`` adapts: all but the output layer and the head."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    heads = tuple(f"{head}." for head in HEAD_NAMES)
    return [
        module_name
        for module_name, module in model.named_modules()
        if isinstance(module, nn.Linear | Conv1D)
        and module is not output
        and module_name not in HEAD_NAMES
        and not module_name.startswith(heads)
    ]


def _check_targets(model: nn.Module, target_modules: tuple[str, ...]) -> list[str]:
    if isinstance(target_modules, str) or not target_modules:
        raise ValueError(
            f"lora target modules must be a non-empty tuple of names, got {target_modules!r}"
        )
    if ALL_LINEAR in target_modules:
        if len(target_modules) != 1:
            raise ValueError(f"'{ALL_LINEAR}' must be the only lora target, got {target_modules}")
        # By path rather than peft's own all-linear, which spares the output layer of a
        # PreTrainedModel alone: a VerbalizedClassifier's output layer scores its classes.
        layers = adaptable_linear_layers(model)
        if not layers:
            raise ValueError(f"'{ALL_LINEAR}' finds no linear layer besides the output and head")
        return layers
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding) and any(
            name == target or name.endswith(f".{target}") for target in target_modules
        ):
            raise ValueError(
                f"lora target {name!r} is an embedding layer; keep embeddings frozen "
                "(differential privacy cannot compute per-sample gradients for LoRA on them)"
            )
    return list(target_modules)


def _classification_head(model: nn.Module) -> tuple[str, ...]:
    children = dict(model.named_children())
    heads = tuple(name for name in HEAD_NAMES if name in children)
    if not heads:
        raise ValueError(
            f"{type(model).__name__} has no classification head named {' or '.join(HEAD_NAMES)}"
        )
    return heads


def trainable_parameters(model: PeftModel) -> dict[str, nn.Parameter]:
    """The parameters that train, by the key :func:`trainable_state` gives them."""
    # Named parameters carry the adapter name ("q_proj.lora_A.default.weight",
    # "classifier.modules_to_save.default.weight"); peft's saved state does not.
    adapter = model.active_adapter
    params = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            params[_strip_adapter_name(name, adapter)] = param
    return dict(sorted(params.items()))


def _strip_adapter_name(name: str, adapter: str) -> str:
    parts = name.split(".")
    kept = []
    for i, part in enumerate(parts):
        previous = parts[i - 1] if i else ""
        if part == adapter and (previous.startswith("lora_") or previous == "modules_to_save"):
            continue
        if part == "modules_to_save" and i + 1 < len(parts) and parts[i + 1] == adapter:
            continue
        kept.append(part)
    return ".".join(kept)


def _check_trainable_names(model: PeftModel, heads: tuple[str, ...]) -> None:
    # The rest of fedtune trusts these keys to match peft's saved adapters and to consist of LoRA
    # factors plus the head; a peft upgrade that changes either must fail here, not in aggregation.
    ours = set(trainable_parameters(model))
    peft_keys = set(get_peft_model_state_dict(model, save_embedding_layers=False))
    if ours != peft_keys:
        diff = sorted(ours ^ peft_keys)
        raise RuntimeError(f"trainable keys differ from peft's adapter state, e.g. {diff[0]!r}")
    pairs, others = lora_pairs(ours)
    if not pairs:
        raise RuntimeError("wrapping produced no LoRA factors")
    head_keys = [key for key in others if any(f".{head}." in key for head in heads)]
    if len(head_keys) != len(others):
        stray = sorted(set(others) - set(head_keys))
        raise RuntimeError(f"unexpected trainable tensor {stray[0]!r} besides LoRA and the head")
    for head in heads:
        if not any(f".{head}." in key for key in head_keys):
            raise RuntimeError(f"the classification head {head!r} is not trainable after wrapping")
