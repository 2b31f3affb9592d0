"""A k-bit run (``model.quantization``) merged exactly: its base layers dequantized.

The run computed each adapted layer as the k-bit base's output (its weights dequantized, in
``train.precision``) plus the float32 adapter's; peft's merge into bitsandbytes layers would
quantize base plus delta again, a different model. Here every bitsandbytes layer becomes a float32
``nn.Linear`` holding its dequantized weights, the adapter's delta is added to those, and the
model is rebuilt from its config without the quantization settings: an ordinary float32 model.
An 8-bit (LLM.int8) run also rounded its activations to 8 bits in each layer, which a float model
does not: its export is the weights the run trained, computed in float32.
"""

from __future__ import annotations

import copy

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from peft.utils.integrations import dequantize_bnb_weight
from torch import nn
from transformers import PreTrainedModel

from federated.model.numerics_loading import bitsandbytes


def dequantize_(model: nn.Module) -> None:
    """In place: every bitsandbytes linear layer replaced by a float32 ``nn.Linear``."""
    bnb = bitsandbytes()
    kinds = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kinds):
                setattr(parent, name, _float_linear(child))


def merge_into_float_(model: PeftModel) -> nn.Module:
    """The adapter's delta added to its (dequantized, float32) base layers; peft's wrappers
    removed. peft's own merge cannot be used: its k-bit layers quantize the sum again."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, LoraLayer):
                base = layer.get_base_layer()
                for adapter in layer.active_adapters:
                    if adapter in layer.lora_A:
                        base.weight += layer.get_delta_weight(adapter).to(base.weight.dtype)
    return model.unload()


def without_quantization(model: PreTrainedModel) -> PreTrainedModel:
    """The same weights in a model built from its config less the quantization settings, so
    that ``save_pretrained`` writes, and ``from_pretrained`` reads, an ordinary model."""
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = type(model)(config)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    return plain


def _float_linear(layer: nn.Module) -> nn.Linear:
    weight = dequantize_bnb_weight(layer.weight, state=getattr(layer, "state", None))
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=layer.bias is not None)
    linear.weight = nn.Parameter(weight.detach().to(torch.float32), requires_grad=False)
    if layer.bias is not None:
        linear.bias = nn.Parameter(layer.bias.detach().to(torch.float32), requires_grad=False)
    return linear
