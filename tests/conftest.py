"""Test-wide settings: offline hub, one torch thread (CI has 2 cores; more threads only contend),
and a private folder for the privacy ledgers clients keep on their node."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray's workers inherit this: simulated clients never write into the user's own state folder.
os.environ.setdefault("FEDTUNE_STATE_DIR", tempfile.mkdtemp(prefix="fedtune-test-state-"))

import torch  # noqa: E402

torch.set_num_threads(1)
