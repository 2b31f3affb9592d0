"""The README's and docs/using.md's ``fedtune generate``, ``evaluate`` and ``predict`` lines, as
printed: the blocks that name the newest run in ``results/`` run line by line in a folder whose
``results/`` holds a finished run (shell lines through bash, ``fedtune`` lines split as the shell
splits them and run by the ``fedtune`` command's own ``main`` in this process, where the model
loads once); a line with a placeholder (``RUN_DIR``) is parsed by the command's parser."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from federated.cli.main import _parser, main
from tests.in_process import run_federation

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "using.md"]
USE = re.compile(r"fedtune (generate|evaluate|predict)\b")
NEWEST_RUN = "RUN=$(ls -td results/*/ | head -1)"


def _blocks() -> list[str]:
    """Each bash block (once, in page order) with a use command."""
    found: list[str] = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            if USE.search(block) and block not in found:
                found.append(block)
    return found


def test_lines_with_placeholders_are_commands_fedtune_accepts() -> None:
    lines = [
        line.split("#")[0].strip()
        for block in _blocks()
        for line in block.splitlines()
        if USE.search(line) and "$RUN" not in line
    ]
    assert lines, "the pages print a use command with a placeholder"
    for line in lines:
        _parser().parse_args(shlex.split(line)[1:])  # exits on what it refuses


@pytest.mark.slow
def test_the_blocks_run_as_printed_after_a_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    run_federation(
        tmp_path / "results", "quick-start", {"model.name": "tiny-llama", "num-server-rounds": 1}, 2
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # a chat's input ends at once
    runnable = [b for b in _blocks() if "$RUN" in b]
    assert runnable[0].startswith(NEWEST_RUN) and len(runnable) >= 3
    run = ""
    for line in (x for block in runnable for x in block.splitlines() if x.strip()):
        if line == NEWEST_RUN:
            run = _shell(line.removeprefix("RUN=$(").removesuffix(")"), tmp_path).strip()
        elif USE.match(line):
            argv = shlex.split(line.replace('"$RUN"', shlex.quote(run)), comments=True)
            assert main(argv[1:]) == 0, line
        else:
            _shell(line, tmp_path)
    out = capsys.readouterr().out
    assert out.count("[base]") >= 3 and "chat: type a message" in out
    assert (tmp_path / "results" / "quick-start" / "evaluation" / "round-1").is_dir()


def _shell(line: str, cwd: Path) -> str:
    done = subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout
