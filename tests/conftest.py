"""Test-wide settings: offline hub, one torch thread (CI has 2 cores; more threads only contend)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
