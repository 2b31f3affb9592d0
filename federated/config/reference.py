"""The schema as documentation: docs/configuration.md's table and pyproject's app config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from federated.config.run_config import RunConfig
from federated.config.schema import default_flat_config, iter_options


def config_reference_markdown(cls: type = RunConfig, prefix: str = "") -> str:
    """docs/configuration.md's key table, generated from the schema so the two cannot drift; of
    ``cls``, a section of options whose keys start with ``prefix``, the same table of its own."""
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for key, f in iter_options(cls, prefix):
        meta = f.metadata
        if meta["choices"]:
            allowed = ", ".join(f"`{c}`" for c in meta["choices"])
        else:
            bounds = []
            if meta["above"] is not None:
                bounds.append(f"> {meta['above']}")
            if meta["minimum"] is not None:
                bounds.append(f">= {meta['minimum']}")
            if meta["maximum"] is not None:
                bounds.append(f"<= {meta['maximum']}")
            allowed = type(f.default).__name__ + (" " + ", ".join(bounds) if bounds else "")
        rows.append(f"| `{key}` | `{f.default!r}` | {allowed} | {meta['help']} |")
    return "\n".join(rows)


def toml_lines(flat: Mapping[str, Any]) -> str:
    """``flat``'s keys and values as the lines of a TOML table."""
    lines = []
    for key, value in flat.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines)


def app_config_toml() -> str:
    """The ``[tool.flwr.app.config]`` table of pyproject.toml, with every default of this schema
    (the strategies' own options follow them there: ``python -m strategies --toml``)."""
    return "[tool.flwr.app.config]\n" + toml_lines(default_flat_config())
