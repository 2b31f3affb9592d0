"""Command lines printed for a person to paste into a POSIX shell, quoted as one would type them.

Run configs hold single quotes (``resume='/path'``), which ``shlex.quote`` turns into
``'resume='"'"'/path'"'"''``; put in double quotes instead where nothing in them would expand.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

_PLAIN = frozenset("@%+=:,./-_")
_EXPANDS_IN_DOUBLE_QUOTES = frozenset('"$`\\!')


def quoted(arg: str) -> str:
    if arg and all(c.isalnum() or c in _PLAIN for c in arg):
        return arg
    if "'" in arg and not _EXPANDS_IN_DOUBLE_QUOTES & set(arg):
        return f'"{arg}"'
    return shlex.quote(arg)


def shell_line(parts: Iterable[object]) -> str:
    return " ".join(quoted(str(part)) for part in parts)
