"""The soft prompt as peft's prompt tuning holds it: ``prompt-length`` virtual tokens whose
embeddings stand before every input (Lester et al. 2021). The run's global prompt is this
adapter's one tensor, so the final prompt saves and loads as any peft prompt-tuning adapter."""

from __future__ import annotations

import torch
from peft import PeftModel, PromptTuningConfig, PromptTuningInit, TaskType
from transformers import PreTrainedModel

from federated.model.seeded_peft import seeded_peft_model

# peft's own name for the tensor in a saved prompt-tuning adapter.
PROMPT_KEY = "prompt_embeddings"


def with_soft_prompt(base: PreTrainedModel, length: int, seed: int) -> PeftModel:
    """``base`` behind a prompt of ``length`` virtual tokens, initialised (seeded) from the
    embeddings of tokens drawn from its vocabulary, as Lester et al. found works best."""
    config = PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        num_virtual_tokens=length,
        prompt_tuning_init=PromptTuningInit.SAMPLE_VOCAB,
    )
    return seeded_peft_model(base, config, seed)


def prompt_parameter(model: PeftModel) -> torch.nn.Parameter:
    """The prompt's embeddings, (length, hidden): the adapter's only trainable tensor."""
    return model.prompt_encoder[model.active_adapter].embedding.weight


def get_prompt(model: PeftModel) -> dict[str, torch.Tensor]:
    return {PROMPT_KEY: prompt_parameter(model).detach().clone()}


def set_prompt(model: PeftModel, tensors: dict[str, torch.Tensor]) -> None:
    """Put a received prompt into ``model`` (a shared, cached one: every message sets it)."""
    weight = prompt_parameter(model)
    prompt = tensors[PROMPT_KEY]
    if prompt.shape != weight.shape:
        raise ValueError(
            f"a prompt of shape {tuple(prompt.shape)} does not fit {tuple(weight.shape)}"
        )
    with torch.no_grad():
        weight.copy_(prompt)
