"""Several ``--run-config`` options of ``fedtune run`` merged into one, key by key.

``flwr run`` 1.41 takes ``--run-config 'a.x=1' --run-config 'a.y=2'`` but merges them one level
deep: the second ``a`` section replaces the first, so ``a.x`` is lost without a word. The
printed run line holds ``server.partition-keys``; a run that adds ``server.round-timeout`` in
a second option, or a resume line appended to a command, must keep it. So ``fedtune run``
hands ``flwr run`` one option, each dotted key from the last option that sets it.
"""

from __future__ import annotations

import re

RUN_CONFIG = ("--run-config", "-c")
# flwr's own pattern for the key=value pairs of one option (flwr.common.config).
_PAIR = re.compile(r"(\S+?)=('[^']*'|\"[^\"]*\"|\S+)")


def merge_run_configs(options: list[str]) -> list[str]:
    """``options`` with every ``--run-config`` of key=value pairs merged into one; a TOML file
    (which flwr takes alone) and a single option are left as they are."""
    values: list[str] = []
    rest: list[str] = []
    args = iter(options)
    for arg in args:
        if arg in RUN_CONFIG:
            value = next(args, None)
            if value is None:
                return options  # flwr run says the value is missing
            values.append(value)
        elif arg.startswith("--run-config="):
            values.append(arg.partition("=")[2])
        else:
            rest.append(arg)
    if len(values) < 2 or any(value.endswith(".toml") for value in values):
        return options
    merged: dict[str, str] = {}
    for value in values:
        merged.update(_PAIR.findall(value))
    return [*rest, "--run-config", " ".join(f"{key}={value}" for key, value in merged.items())]
