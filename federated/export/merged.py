"""A trained run's model as a plain transformers model: nothing of fedtune or peft left in it.

The LoRA factors (and a strategy's base delta, already in the base weights) are merged by peft's
``merge_and_unload``; a zeroth-order run's weights are its replayed ones, their low-precision
storage (``zo.frozen-dtype``) undone; a hybrid or first-order head is kept as trained; a k-bit
run's base layers are dequantized first (`federated.export.kbit`). The work is done on a float32
copy: the shared cached model stays as it was, and a delta merged into lower-precision weights
would be rounded to their precision, which the run's own forward pass (base output plus adapter
output) never does.
"""

from __future__ import annotations

import copy

from peft import PeftModel
from torch import nn
from torch.nn.utils import parametrize
from transformers import PreTrainedModel

from federated.export.kbit import dequantize_, merge_into_float_, without_quantization
from federated.inference.trained_model import TrainedModel
from federated.model.verbalizer import VerbalizedClassifier


def merged_model(trained: TrainedModel) -> PreTrainedModel:
    """The run's model with its training merged into float32 weights, in eval mode."""
    module = trained.zo.model if trained.zo else trained.local.model
    kbit = trained.config.model.quantization != "none"
    model = copy.deepcopy(module)
    if kbit:
        dequantize_(model)
    model = model.float()
    _undo_parametrizations(model)
    if isinstance(model, PeftModel):
        model = merge_into_float_(model) if kbit else model.merge_and_unload()
    if isinstance(model, VerbalizedClassifier):
        model = model.lm  # its class scores are the LM's next-token logits: the LM is the model
    if kbit:
        model = without_quantization(model)
    model.tie_weights()
    return model.eval()


def _undo_parametrizations(model: nn.Module) -> None:
    """Low-precision storage of frozen matrices (`federated.zo.frozen_precision`) as the float32
    matrices the forward pass computes with."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
