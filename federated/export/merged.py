"""A trained run's model as a plain transformers model: nothing of fedtune or peft left in it.

The LoRA factors (and a strategy's base delta, already in the base weights) are merged by peft's
``merge_and_unload``; a zeroth-order run's weights are its replayed ones, their low-precision
storage (``zo.frozen-dtype``) undone; a hybrid or first-order head is kept as trained. The work is
done on a float32 copy: the shared cached model stays as it was, and a delta merged into
lower-precision weights would be rounded to their precision, which the run's own forward pass
(base output plus adapter output) never does.
"""

from __future__ import annotations

import copy

from peft import PeftModel
from torch import nn
from torch.nn.utils import parametrize
from transformers import PreTrainedModel

from federated.config import RunConfig
from federated.model.trained_model import TrainedModel
from federated.model.verbalizer import VerbalizedClassifier


def merged_model(trained: TrainedModel) -> PreTrainedModel:
    """The run's model with its training merged into float32 weights, in eval mode."""
    check_mergeable(trained.config)
    module = trained.zo.model if trained.zo else trained.local.model
    model = copy.deepcopy(module).float()
    _undo_parametrizations(model)
    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    if isinstance(model, VerbalizedClassifier):
        model = model.lm  # its class scores are the LM's next-token logits: the LM is the model
    model.tie_weights()
    return model.eval()


def check_mergeable(config: RunConfig) -> None:
    """A ``ValueError`` in one line for a run whose merge this module does not do exactly."""
    if config.model.quantization != "none":
        # peft's merge into bitsandbytes layers quantizes base plus delta again: the result is
        # not the model the run computed (k-bit base output plus float adapter output).
        raise ValueError(
            f"model.quantization = {config.model.quantization}: merging into bitsandbytes "
            "weights would quantize the adapter's delta again, so export does not merge k-bit "
            "runs; their adapter is in the run folder's adapter/ (peft's format)"
        )


def _undo_parametrizations(model: nn.Module) -> None:
    """Low-precision storage of frozen matrices (`federated.zo.frozen_precision`) as the float32
    matrices the forward pass computes with."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
