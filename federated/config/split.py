"""The split section (mode = split, SFPrompt; or split devices in a LoRA run,
simulation.split-fallback): where the model is cut, the soft prompt, and the device-side steps
that save exchanges."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class SplitSettings:
    cut_layer: int = option(
        1,
        "Transformer blocks on the device (after the embeddings and any soft prompt), the most a "
        "split device gets; the server runs the rest, the device the final norm and LM head, so "
        "labels stay on the device.",
        minimum=1,
    )
    prompt_length: int = option(
        8, "Soft-prompt tokens before every input: what split devices train.", minimum=1
    )
    local_steps: int = option(
        2,
        "Local-loss steps per round before any exchange: the head's output goes straight to "
        "the device's tail, with no message (0: none).",
        minimum=0,
    )
    keep_fraction: float = option(
        0.5,
        "Share of a device's examples that cross the cut each round: those the local model "
        "gets most wrong (highest EL2N score); 1: all.",
        above=0.0,
        maximum=1.0,
    )
    activation_clip: float = option(
        0.0,
        "Clip each example's cut-layer activations to this L2 norm before they leave the device "
        "(0: no clipping and no noise). The server sees the activations of every example a "
        "split device trains on.",
        minimum=0.0,
    )
    activation_noise: float = option(
        0.0,
        "Gaussian noise on the sent activations, std = this * split.activation-clip per entry; "
        "a stated mechanism, not accounted as differential privacy.",
        minimum=0.0,
    )
