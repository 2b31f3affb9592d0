"""The model cut in three, as SFPrompt places it: the device's head (embeddings, the soft
prompt, the first ``cut`` blocks), the server's body (the blocks after the cut) and the
device's tail (the final norm and the LM head). The labels never leave the device.

Each part runs the model's own modules with the positions and causal mask the whole model
would compute, so head, body and tail in turn give the whole model's logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft import PeftModel
from transformers.masking_utils import create_causal_mask

from federated.split.prompt_model import get_prompt, prompt_parameter


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


@dataclass
class SplitModel:
    """One prompt-tuned model (peft) seen as head, body and tail around block ``cut``."""

    prompted: PeftModel
    cut: int
    initial: dict[str, torch.Tensor] = field(init=False)  # the seeded prompt, before any round

    def __post_init__(self) -> None:
        check_splittable(self.lm, self.cut)
        self.initial = get_prompt(self.prompted)

    @property
    def lm(self) -> torch.nn.Module:
        return self.prompted.base_model

    @property
    def prompt(self) -> torch.nn.Parameter:
        return prompt_parameter(self.prompted)

    def head(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The cut-layer activations of a batch behind the prompt, and the mask they go with
        (the prompt's positions count as tokens; None: no padding)."""
        embeds = self.lm.model.embed_tokens(input_ids)
        prompt = self.prompt.to(embeds.dtype).unsqueeze(0).expand(embeds.size(0), -1, -1)
        hidden = torch.cat((prompt, embeds), dim=1)
        mask = None
        if attention_mask is not None:
            ones = attention_mask.new_ones(attention_mask.size(0), prompt.size(1))
            mask = torch.cat((ones, attention_mask), dim=1)
        return self._blocks(hidden, mask, slice(0, self.cut)), mask

    def device_parameters(self) -> list[torch.nn.Parameter]:
        """What a split device holds: the embeddings, the prompt, the blocks before the cut,
        the final norm and the LM head (once, where it is tied to the embeddings)."""
        decoder, seen, held = self.lm.model, set(), []
        modules = [decoder.embed_tokens, *decoder.layers[: self.cut], decoder.norm, self.lm.lm_head]
        for p in [self.prompt, *(p for m in modules for p in m.parameters())]:
            if id(p) not in seen:
                seen.add(id(p))
                held.append(p)
        return held

    def body(self, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The server's part: the blocks after the cut."""
        return self._blocks(hidden, mask, slice(self.cut, None))

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
