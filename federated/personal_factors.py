"""A client's own B factors (fedsa-lora), kept on the node between the rounds it trains.

They go to a file per round in the node's state folder (``federated.node_state``), not only to
Flower's node state, which dies with the process: a resumed run finds the factors its
uninterrupted self would have used, the newest from a round before the current one, even when the
server died after this client had already trained the round again. ``fedtune evaluate`` reads
them to measure each partition's personalised model."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from federated.atomic_file import replace_file
from federated.node_state import run_file

_ROUND = re.compile(r"\.round-(\d+)\.safetensors$")


class PersonalFactors:
    """This node's personal B factors in one run, one file per round it trained."""

    def __init__(self, root: Path, key: str, partition: tuple[int, int]) -> None:
        """The factors of ``partition`` (id, count) in run ``key``, under the state folder
        ``root``."""
        template = run_file(root, "personal", key, partition, "round-0.safetensors")
        self.folder, self.stem = template.parent, template.name.removesuffix(".round-0.safetensors")

    def _files(self) -> dict[int, Path]:
        if not self.folder.is_dir():
            return {}
        found = {}
        for path in self.folder.glob(f"{self.stem}.round-*.safetensors"):
            match = _ROUND.search(path.name)
            if match:
                found[int(match.group(1))] = path
        return found

    def before(self, server_round: int) -> tuple[int | None, dict[str, torch.Tensor]]:
        """The newest factors from a round before ``server_round``, and that round (None and
        nothing before the client's first round)."""
        files = self._files()
        earlier = [r for r in files if r < server_round]
        if not earlier:
            return None, {}
        latest = max(earlier)
        return latest, load_file(str(files[latest]))

    def save(self, server_round: int, factors: dict[str, torch.Tensor], since: int | None) -> None:
        """Keep ``factors`` as this round's; drop files older than ``since``, the round they
        started from, which a rerun of this round would need again."""
        path = self.folder / f"{self.stem}.round-{server_round}.safetensors"
        replace_file(path, save({k: v.contiguous() for k, v in factors.items()}))
        for old_round, old in self._files().items():
            if old_round < (since if since is not None else server_round):
                old.unlink(missing_ok=True)
