"""The final global model on disk: a peft adapter, plus the base-weight delta some strategies make.

flora, fedex-lora and flexlora fold part of what clients learned into the frozen base weights; that
part is not a LoRA factor, so it is saved beside the adapter, and loading adds it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from federated.model.local_model import LocalModel
from federated.model.lora import base_weight_key, in_weight_layout, save_adapter

BASE_DELTA_FILE = "base_delta.safetensors"


def save_global_adapter(
    local: LocalModel, base_delta: Mapping[str, torch.Tensor], folder: Path
) -> None:
    """Save the adapter in peft's format, and the base delta (if any) beside it."""
    save_adapter(local.model, folder)
    if base_delta:
        save_file({m: t.contiguous() for m, t in base_delta.items()}, str(folder / BASE_DELTA_FILE))


def load_global_adapter(base: PreTrainedModel, folder: Path) -> PeftModel:
    """``PeftModel.from_pretrained`` plus the base delta, when the folder has one."""
    model = PeftModel.from_pretrained(base, folder)
    path = Path(folder) / BASE_DELTA_FILE
    if path.is_file():
        params = dict(model.named_parameters())
        with torch.no_grad():
            for module, delta in load_file(str(path)).items():
                weight = params[base_weight_key(module)]
                weight.add_(in_weight_layout(model, module, delta).to(weight.dtype))
    return model
