"""The names of a job's numerics, importable without torch (the ``fedtune`` command's parser)."""

PRECISIONS = ("fp32", "bf16", "fp16")
QUANTIZATIONS = ("none", "8bit", "4bit")
DEVICES = ("auto", "cpu", "cuda", "mps")
