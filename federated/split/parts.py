"""The model cut in three, as SFPrompt places it: the device's head (embeddings, the soft
prompt, the first ``cut`` blocks), the server's body (the blocks after the cut) and the
device's tail (the final norm and the LM head). The labels never leave the device.

The model is a peft model: prompt tuning (mode = split: the device trains the prompt) or LoRA
(a split device in a LoRA run: the device trains its blocks' factors, the server the body's,
each device's with tensors of its own).

Each part runs the model's own modules with the positions and causal mask the whole model
would compute, so head, body and tail in turn give the whole model's logits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from transformers.masking_utils import create_causal_mask

from federated.model.lora import trainable_parameters
from federated.split.prompt_model import PROMPT_KEY, get_prompt, prompt_parameter

_BLOCK = re.compile(r"\.layers\.(\d+)\.")


class SplitError(ValueError):
    """A model or cut the split cannot serve."""


def check_splittable(model: torch.nn.Module, cut: int) -> None:
    """A decoder shaped like Llama (SmolLM2, Llama, Mistral, Qwen2 without sliding windows)
    with at least one block on each side of the cut."""
    decoder = getattr(model, "model", None)
    shaped = all(
        hasattr(decoder, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb")
    ) and hasattr(model, "lm_head")
    if not shaped:
        raise SplitError(
            f"{type(model).__name__} is not a Llama-shaped decoder (embed_tokens, layers, norm, "
            "rotary_emb, lm_head): split mode cuts only those"
        )
    if any(t != "full_attention" for t in getattr(decoder.config, "layer_types", None) or ()):
        raise SplitError("split mode needs full attention in every block (no sliding windows)")
    blocks = len(decoder.layers)
    if not 1 <= cut < blocks:
        raise SplitError(f"the cut must leave blocks on both sides: 1..{blocks - 1}, not {cut}")


def block_of(key: str) -> int | None:
    """The decoder block a parameter key belongs to (``...layers.3.self_attn...``: 3)."""
    found = _BLOCK.search(key)
    return int(found.group(1)) if found else None


class _Body(torch.nn.Module):
    """The blocks after the cut as a module, so that ``torch.func.functional_call`` can run
    them with one device's LoRA factors in place of the model's own."""

    def __init__(self, split: SplitModel) -> None:
        super().__init__()
        self.peft_model = split.peft_model
        self._run = split._blocks  # a bound method: not a submodule
        self._which = slice(split.cut, None)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self._run(hidden, mask, self._which)


@dataclass
class SplitModel:
    """One peft model (prompt tuning or LoRA) seen as head, body and tail around block ``cut``."""

    peft_model: PeftModel
    cut: int
    initial: dict[str, torch.Tensor] = field(init=False)  # the seeded prompt, before any round

    def __post_init__(self) -> None:
        check_splittable(self.lm, self.cut)
        self.initial = get_prompt(self.peft_model) if self.prompt is not None else {}

    @property
    def lm(self) -> torch.nn.Module:
        return self.peft_model.get_base_model()

    @property
    def prompt(self) -> torch.nn.Parameter | None:
        """The soft prompt in mode = split; None on a LoRA model."""
        if not self.peft_model.peft_config[self.peft_model.active_adapter].is_prompt_learning:
            return None
        return prompt_parameter(self.peft_model)

    def device_trainable(self) -> dict[str, torch.nn.Parameter]:
        """What the device trains: its prompt, or the LoRA factors outside the body."""
        if self.prompt is not None:
            return {PROMPT_KEY: self.prompt}
        return {
            k: p for k, p in trainable_parameters(self.peft_model).items() if not self._in_body(k)
        }

    def body_trainable(self) -> dict[str, torch.nn.Parameter]:
        """The LoRA factors of the body's blocks (none in mode = split): the server trains them."""
        if self.prompt is not None:
            return {}
        return {k: p for k, p in trainable_parameters(self.peft_model).items() if self._in_body(k)}

    def _in_body(self, key: str) -> bool:
        block = block_of(key)
        return block is not None and block >= self.cut

    def head(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The cut-layer activations of a batch behind the prompt, and the mask they go with
        (the prompt's positions count as tokens; None: no padding)."""
        hidden = self.lm.model.embed_tokens(input_ids)
        mask = attention_mask
        if self.prompt is not None:
            prompt = self.prompt.to(hidden.dtype).unsqueeze(0).expand(hidden.size(0), -1, -1)
            hidden = torch.cat((prompt, hidden), dim=1)
            if attention_mask is not None:
                ones = attention_mask.new_ones(attention_mask.size(0), prompt.size(1))
                mask = torch.cat((ones, attention_mask), dim=1)
        return self._blocks(hidden, mask, slice(0, self.cut)), mask

    @property
    def virtual_tokens(self) -> int:
        """Positions before the input: the prompt's length, or 0."""
        return 0 if self.prompt is None else self.prompt.size(0)

    def device_parameters(self) -> list[torch.nn.Parameter]:
        """What a split device holds: the embeddings, the prompt, the blocks before the cut
        (with their LoRA factors), the final norm and the LM head (once, where it is tied to
        the embeddings)."""
        decoder, seen, held = self.lm.model, set(), []
        modules = [decoder.embed_tokens, *decoder.layers[: self.cut], decoder.norm, self.lm.lm_head]
        prompt = [] if self.prompt is None else [self.prompt]
        for p in [*prompt, *(p for m in modules for p in m.parameters())]:
            if id(p) not in seen:
                seen.add(id(p))
                held.append(p)
        return held

    def body(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None,
        factors: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The server's part: the blocks after the cut, with ``factors`` (keys as
        ``body_trainable``'s) in place of the model's own LoRA factors."""
        if not factors:
            return self._blocks(hidden, mask, slice(self.cut, None))
        names = {id(p): n for n, p in self.peft_model.named_parameters()}
        params = self.body_trainable()
        swapped = {f"peft_model.{names[id(params[k])]}": t for k, t in factors.items()}
        return torch.func.functional_call(_Body(self), swapped, (hidden, mask))

    def tail(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from the last block's output (or, for the local loss, from the cut's)."""
        return self.lm.lm_head(self.lm.model.norm(hidden))

    def _blocks(
        self, hidden: torch.Tensor, mask: torch.Tensor | None, which: slice
    ) -> torch.Tensor:
        decoder = self.lm.model
        positions = torch.arange(hidden.size(1), device=hidden.device).unsqueeze(0)
        causal = create_causal_mask(
            config=decoder.config,
            inputs_embeds=hidden,
            attention_mask=mask,
            past_key_values=None,
            # No position ids: they only serve to detect packed sequences, which no batch is.
            position_ids=None,
        )
        rotary = decoder.rotary_emb(hidden, position_ids=positions)
        for block in decoder.layers[which]:
            hidden = block(
                hidden, attention_mask=causal, position_embeddings=rotary, position_ids=positions
            )
        return hidden
