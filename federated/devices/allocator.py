"""The allocator the memory planner's estimates hold for: one that gives freed blocks back.

glibc's malloc serves a block above its mmap threshold (128 KiB at start) with its own mapping
and unmaps it when it is freed; but each such free raises the threshold to the freed block's size
(up to 32 MiB on 64-bit), so from a training step's second pass on the activations below that
size come from the heap, where freed memory stays with the process and the next step's tensors
do not fit in its gaps. Measured with its default (``benchmarks/simulation``), jobs held up to
1.85x their tensors' peak: the BERT family's many mid-size activations most, SmolLM2 1.3-1.45x.
Fixing the threshold stops it growing: the call below is the one ``MALLOC_MMAP_THRESHOLD_``
makes when a process starts, made here from inside the process, after it started
(``client.planned_memory`` says when and why).
"""

from __future__ import annotations

import ctypes

# glibc's malloc.h: the option, and its value at start (what the planner's constants measure).
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold in this process, so that freed blocks above it go back to
    the system at once. False where the C library is not glibc: its allocator was not
    measured, and the memory planner's estimates are not known to hold there."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    return libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
