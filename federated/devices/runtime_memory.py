"""The memory of a client's runtime: the process a SuperNode starts for a message (Flower's
ClientApp runtime and fedtune's ClientApp imported: torch, transformers, peft, opacus, gRPC),
before any model is built.

It depends on the machine and the software, not on the job, so it is measured once for each:
a fresh interpreter imports what that process imports and reports its resident set. The result is
kept in fedtune's cache folder, keyed by the interpreter, the platform and the version of every
installed package, so an upgrade measures it again. A node measures its own machine; a
simulation measures the machine it runs on, for every virtual device.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from federated.model.numerics_loading import KBIT_FOLDER
from federated.model.presets import cache_dir

# The ClientApp's module, as pyproject.toml's [tool.flwr.app.components] names it: imported by
# name in a child process, so that nothing here depends on the client package.
CLIENT_APP_MODULE = "client.app"
# What the flwr-clientapp command imports to run it (about 50 MB more than the app alone here).
FLOWER_CLIENTAPP_RUNTIME = "flwr.supernode.cli"
CACHE_FILE_NAME = "runtime-memory.json"

_MEASURE = f"""
import psutil
import {FLOWER_CLIENTAPP_RUNTIME}
import {CLIENT_APP_MODULE}
print(psutil.Process().memory_info().rss)
"""


def software_key() -> str:
    """What the runtime's size depends on: interpreter, platform and installed packages."""
    packages = sorted(
        f"{dist.metadata['Name']}=={dist.version}" for dist in importlib.metadata.distributions()
    )
    parts = [sys.version, platform.platform(), *packages]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def measure_runtime_bytes() -> float:
    """The resident set of a fresh interpreter that has imported a ClientApp process's modules."""
    # The child searches the modules where this process does, installed app or checkout alike,
    # less bitsandbytes' folder: a process that loaded k-bit weights put it on the path, and a
    # default client (no model.quantization) never imports it (about 48 MB).
    kbit = str(Path(sys.prefix) / KBIT_FOLDER)
    path = os.pathsep.join(p for p in sys.path if p and p != kbit)
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"could not measure the client's runtime memory (import {CLIENT_APP_MODULE}): "
            + (done.stderr.strip().splitlines() or ["no output"])[-1]
        )
    return float(done.stdout.split()[-1])


@lru_cache(maxsize=1)
def runtime_bytes() -> float:
    """This machine's client runtime in bytes: from the cache when this software was measured,
    else measured now (a few seconds of imports) and cached."""
    path, key = cache_dir() / CACHE_FILE_NAME, software_key()
    known = _read(path)
    if key not in known:
        known[key] = measure_runtime_bytes()
        _write(path, known)
    return known[key]


def _read(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # not measured yet, or a torn file: measuring again costs seconds
    return {k: float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write(path: Path, known: dict[str, float]) -> None:
    """Replace the file whole, so that processes measuring at once never read half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(known, indent=1) + "\n")
    os.replace(partial, path)
