"""A base model loaded as its numerics say: weights in ``train.precision``, the linear layers of
its blocks in k bits through bitsandbytes (``model.quantization``), prepared for LoRA training
as peft prepares k-bit models, and gradient checkpointing (``train.gradient-checkpointing``).

The planner (`federated.devices.memory_estimate`) counts the same form: base weights in the
precision, quantized layers at their k-bit size with everything else in float32, one block's
activations recomputed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from transformers import PreTrainedModel

from federated.model.numerics import Numerics

# Recompute without torch's reentrant checkpoint, which needs an input that requires grad (a
# frozen embedding's output does not) and would train nothing of the first block.
_CHECKPOINTING = {"use_reentrant": False}


# Where setup.sh installs bitsandbytes: beside the environment (<venv>/kbit), not in it.
KBIT_FOLDER = "kbit"


def bitsandbytes() -> ModuleType:
    """bitsandbytes, from the environment or from the folder beside it (`KBIT_FOLDER`).

    Installed in the environment, bitsandbytes is imported by peft in every process (about 2 s
    of each process's start on 2 cores: every Ray actor's, every node's), and only k-bit runs
    use it; setup.sh keeps it beside the environment, and a k-bit run puts it on the path.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        folder = Path(sys.prefix) / KBIT_FOLDER
        if not (folder / "bitsandbytes").is_dir():
            raise ValueError(
                "model.quantization needs bitsandbytes: ./setup.sh installs it beside the "
                f"environment ({folder}), or pip install bitsandbytes==0.50.2"
            ) from None
        sys.path.append(str(folder))
        import bitsandbytes as bnb
        from peft import import_utils

        # peft remembers whether bitsandbytes was there when it first asked.
        import_utils.is_bnb_available.cache_clear()
        import_utils.is_bnb_4bit_available.cache_clear()
    return bnb


def weight_kwargs(numerics: Numerics, device: str) -> dict[str, Any]:
    """``from_pretrained``'s arguments for the weights: their dtype, and for a k-bit model its
    bitsandbytes config and the device it is quantized on."""
    if not numerics.quantized:
        return {"dtype": numerics.dtype}
    from transformers import BitsAndBytesConfig

    bitsandbytes()
    if numerics.quantization == "4bit":
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=numerics.dtype,
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"dtype": numerics.dtype, "quantization_config": config, "device_map": {"": device}}


def prepared(model: PreTrainedModel, numerics: Numerics, device: str) -> PreTrainedModel:
    """The loaded ``model`` on ``device``, ready for LoRA: a k-bit one through peft's
    ``prepare_model_for_kbit_training`` (its other weights in float32, base frozen), with
    gradient checkpointing when asked for."""
    if numerics.quantized:
        from peft import prepare_model_for_kbit_training

        bnb = bitsandbytes()

        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                # On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit weight for a
                # faster kernel at its first forward without gradients (an evaluation), and
                # that kernel has no backward: every later training step would then leave the
                # factors without a gradient. Training and evaluating one model, keep it off.
                module.support_avx512bf16_for_cpu = False
        return prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=numerics.gradient_checkpointing,
            gradient_checkpointing_kwargs=_CHECKPOINTING,
        )
    model = model.to(device)
    if numerics.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=_CHECKPOINTING)
    return model
