"""The model layer: presets and loading, LoRA, the task heads and losses, evaluation."""
