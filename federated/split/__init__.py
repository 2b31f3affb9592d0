"""Split learning with soft prompts (SFPrompt, Cao et al. 2024): a device too small for the
model runs its first layers and its head, the server the layers between, and they train soft
prompts at the device's input by exchanging cut-layer activations and their gradients."""
