"""docs/deploy.md read as a test reads it: its fenced command lines, as they would run on one
machine, and its table of what is refused, with the lines and exit status it promises.

On one machine the doc's lines change only where the doc says a test changes them: 127.0.0.1
for fl.example.org, a folder of the test's own for /srv/fedtune and /var/lib/fedtune, and free
ports for the SuperLink's 8000 and (``LocalDeployment.start_node``) the SuperNodes' 9094 + i, as
the machine is shared."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"
HOST, PORT = "fl.example.org", 8000
FOLDERS = ("/srv/fedtune", "/var/lib/fedtune")
REFUSED = "## What is refused, and the line that says so"
# The table's stand-ins for what differs from run to run, and what they match.
_PLACEHOLDERS = {"HOST:PORT": r"\S+", "HOST": r"\S+", "NAMES": r"[^)]+", "CA": r"\S+"}


def section(heading: str) -> str:
    """The text under ``heading`` (a line of docs/deploy.md) up to the next heading."""
    text = DOC.read_text()
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else None]


def fenced_bash(heading: str) -> list[str]:
    """The ```bash blocks under ``heading``, in order."""
    return re.findall(r"```bash\n(.*?)```", section(heading), flags=re.S)


def on_this_machine(text: str, folder: Path, port: int) -> str:
    """The doc's text with the one machine's host, folder and SuperLink port."""
    for placeholder in FOLDERS:
        text = text.replace(placeholder, str(folder))
    text = text.replace(f"{HOST}:{PORT}", f"127.0.0.1:{port}")
    return text.replace(HOST, "127.0.0.1").replace(f"--port {PORT} ", f"--port {port} ")


def commands_in(block: str) -> list[str]:
    """A block's command lines: comments and blank lines dropped, trailing comments too."""
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return [shlex.join(shlex.split(line, comments=True)) for line in lines]


@dataclass(frozen=True)
class PrintedLines:
    """What ``fedtune commands`` prints, in the parts its comments name."""

    superlink: str
    connection: str  # the config.toml section
    registrations: list[str]
    devices: list[str]  # fedtune check-link ... && flower-supernode ...
    run: str

    @classmethod
    def parse(cls, printed: str) -> PrintedLines:
        lines = [line for line in printed.splitlines() if line and not line.startswith("#")]
        toml = [line for line in lines if line.startswith("[") or " = " in line]
        return cls(
            superlink=next(line for line in lines if line.startswith("flower-superlink")),
            connection="\n".join(toml) + "\n",
            registrations=[line for line in lines if line.startswith("flwr supernode register")],
            devices=[line for line in lines if line.startswith("fedtune check-link")],
            run=next(line for line in lines if line.startswith("fedtune run")),
        )


@dataclass(frozen=True)
class Refusal:
    """A row of the doc's table: the lines it quotes (as patterns) and the exit status."""

    lines: list[re.Pattern[str]]
    status: int


def _pattern(quoted: str) -> re.Pattern[str]:
    parts = re.split(f"({'|'.join(map(re.escape, _PLACEHOLDERS))})", quoted)
    return re.compile("".join(_PLACEHOLDERS.get(p, re.escape(p)) for p in parts))


def refusals() -> dict[str, Refusal]:
    """The doc's table of what is refused: who -> the lines they see and the exit status."""
    rows = [line for line in section(REFUSED).splitlines() if line.startswith("| ")][1:]
    table = {}
    for row in rows:
        who, seen, status = (cell.strip() for cell in row.strip("|").split(" | "))
        quoted = re.findall(r"`([^`]+)`", seen)
        table[who] = Refusal([_pattern(q) for q in quoted], int(status))
    return table
