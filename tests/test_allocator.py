"""The allocator the memory planner assumes: on a node that plans its memory, the ClientApp's
process gives freed blocks back to the system, where glibc's default keeps them once a larger
block has been freed, as a training step's activations are from its second pass on; a node
with no memory to plan for keeps the default (and its speed)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# A message through the ClientApp's memory mod on a node with the given node config; then free
# a 16 MiB block (glibc's default raises its mmap threshold to it), touch 200 blocks of 1 MiB,
# free all but the last (which keeps the heap's top in place), report the MiB released.
_PROGRAM = """
import ctypes, json, sys
from flwr.app import Context, RecordDict
from client.planned_memory import allocator_for_planned_memory
node = Context(1, 1, json.loads(sys.argv[1]), RecordDict(), {})
allocator_for_planned_memory(None, node, lambda message, context: message)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def resident():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
MIB = 1 << 20
large = libc.malloc(16 * MIB)
libc.memset(large, 1, 16 * MIB)
libc.free(large)
blocks = [libc.malloc(MIB) for _ in range(200)]
for block in blocks:
    libc.memset(block, 1, MIB)
held = resident()
for block in blocks[:-1]:
    libc.free(block)
print((held - resident()) / MIB)
"""


def _released_mib(node_config: dict) -> float:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"
    }
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, json.dumps(node_config)],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_a_node_that_plans_its_memory_gets_back_what_glibc_keeps_by_default() -> None:
    partition = {"partition-id": 0, "num-partitions": 2}
    assert _released_mib(partition) < 10  # glibc's default: 199 MiB freed, none given back
    assert _released_mib({**partition, "device-profile": "pi4"}) > 190
    assert _released_mib({**partition, "memory-gb": 2.5}) > 190
