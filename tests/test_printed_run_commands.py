"""Every ``fedtune run .`` command the README and docs/ print, as printed: its ``--run-config``
over pyproject's app config is a run config the server accepts (the docs' failure example
excepted, which must fail with the line the doc shows). The commands that need real devices are
run literally by the deployment tests (``tests/deploy_doc.py``)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from flwr.common.config import flatten_dict, parse_config_args

from federated.cli.run_config_merge import RUN_CONFIG, merge_run_configs
from federated.config import ConfigError, parse_run_config
from strategies.registry import strategy_options

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Lines of docs/deploy.md hold placeholders for the operator's own machines.
DEPLOY = ROOT / "docs" / "deploy.md"
# docs/running.md shows a run that is refused, with the line it prints.
REFUSED = {"lora.rank=0": "run config 'lora.rank' = 0: must be >= 1"}


def _printed_commands() -> list[tuple[str, str]]:
    """(page, command) for each ``fedtune run .`` in a bash block, continuation lines joined."""
    found = []
    for page in PAGES:
        if page == DEPLOY:
            continue
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if "fedtune run ." in line:
                    command = line[line.index("fedtune run .") :].split("#")[0].strip()
                    found.append((page.name, command))
    return found


COMMANDS = _printed_commands()


def _app_config() -> dict:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return flatten_dict(pyproject["tool"]["flwr"]["app"]["config"])


def test_the_pages_print_run_commands() -> None:
    assert {page for page, _ in COMMANDS} >= {"README.md", "configuration.md", "privacy.md"}


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_a_printed_run_command_is_a_run_the_server_accepts(page: str, command: str) -> None:
    args = merge_run_configs(shlex.split(command)[3:])
    values = [args[i + 1] for i, arg in enumerate(args) if arg in RUN_CONFIG]
    given = parse_config_args(values)
    unknown = set(given) - set(_app_config())
    assert not unknown, f"{page}: {command}: keys Flower would refuse: {unknown}"
    refused = REFUSED.get(" ".join(values))
    flat = {**_app_config(), **given}
    if refused is not None:
        with pytest.raises(ConfigError, match=re.escape(refused)):
            parse_run_config(flat)
        assert refused in (ROOT / "docs" / page).read_text()
        return
    strategy_options(parse_run_config(flat))
