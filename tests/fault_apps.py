"""A copy of the app whose ClientApp misbehaves, for runs through ``fedtune run`` (``flwr run``
builds the app it runs from a folder, so the fault travels inside that folder's FAB)."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("federated", "client", "server", "strategies", "simulation")

HANGING = '''"""fedtune's ClientApp (its mods too), but partition {partition} never answers
a training message."""

import threading

from flwr.clientapp import ClientApp

import client.app as fedtune_client
from client.deadline import end_past_deadline


def _hang(msg, context, call_next):
    is_train = msg.metadata.message_type == "train"
    if is_train and context.node_config["partition-id"] == {partition}:
        threading.Event().wait()  # forever: only killing the worker ends it
    return call_next(msg, context)


app = fedtune_client.register(ClientApp(mods=[end_past_deadline, _hang]))
'''


def hanging_app(folder: Path, partition: int) -> Path:
    """The app in ``folder``, with partition ``partition`` hanging in every training round."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "hanging.py").write_text(HANGING.format(partition=partition))
    pyproject = (ROOT / "pyproject.toml").read_text()
    pyproject = pyproject.replace('clientapp = "client.app:app"', 'clientapp = "hanging:app"')
    pyproject = pyproject.replace("fab-include = [", 'fab-include = [\n    "hanging.py",')
    (folder / "pyproject.toml").write_text(pyproject)
    return folder
