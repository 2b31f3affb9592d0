"""A 7B-sized adapter through a real SuperLink and SuperNode on loopback: Mistral-7B's rank-32
LoRA on every linear layer (83.9M numbers: 167.8 MB as wire.dtype = bfloat16 sends them, 335.5 MB
in float32) to a node and back, arriving bit for bit (docs/deploy.md#large-adapters)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import pytest

from federated.deploy.commands import CONNECTION, superlink_command, supernode_command
from tests.deployment import LocalDeployment
from tests.large_payload_app import adapter_shapes

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
PYPROJECT = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "large-payload"
version = "0.1.0"
dependencies = ["flwr==1.41.0", "numpy"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedtune"

[tool.flwr.app.components]
serverapp = "large_payload_app:server"
clientapp = "large_payload_app:client"

[tool.flwr.app.config]
seed = 0
out = ""
dtype = "float32"
"""


def test_a_7b_adapter_goes_to_a_node_and_back_bit_for_bit(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(HERE / "large_payload_app.py", app)
    (app / "pyproject.toml").write_text(PYPROJECT)
    out = tmp_path / "payload.json"
    federation = LocalDeployment(tmp_path / "deployment", 1, authenticate=False)
    # In memory: with --database, Flower 1.41 keeps the objects in SQLite, whose 5 s lock
    # timeout a write of this size outlasts ("database is locked"; docs/deploy.md).
    in_memory = dataclasses.replace(federation.deployment, database=None)
    federation.start_superlink(superlink_command(in_memory))
    try:
        # Without the printed line's link check: the SuperNode retries until the SuperLink is up.
        federation.start_node(0, supernode_command(federation.deployment, 0, 1))
        started = time.monotonic()
        run = federation.flwr(
            "run",
            str(app),
            CONNECTION,
            "--stream",
            "--run-config",
            f'out="{out}"',  # float32: the default wire.dtype, the larger payload
            timeout=300,
        )
        wall = time.monotonic() - started
        assert out.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    finally:
        federation.close()
    result = json.loads(out.read_text())
    numbers = sum(a * b for a, b in adapter_shapes().values())
    assert numbers == 83_886_080 and result["numbers"] == numbers  # 335,544,320 float32 bytes
    assert result["arrays"] == 448
    assert result["array_bytes"] == 4 * numbers + 448 * 128  # numpy's header on each array
    assert result["client_digest"] == result["sent_digest"]
    assert result["returned_digest"] == result["expected_back"]
    print(json.dumps({**result, "flwr_run_seconds": wall}, indent=1))
