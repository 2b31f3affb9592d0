"""``fedtune export``'s report: what was written, how large, and how to load it."""

from __future__ import annotations

from pathlib import Path

from federated.export.run_export import export_run


def export_command(
    run_dir: Path, server_round: int | None, out: Path | None, gguf_types: tuple[str, ...]
) -> str:
    """Export the run and describe the files, one line each."""
    result = export_run(run_dir, server_round, out, tuple(dict.fromkeys(gguf_types)))
    lines = [f"round {result.round} of {run_dir}, merged, in {result.folder}:"]
    lines += [f"  {path.name}  {_size(path.stat().st_size)}" for path in result.files]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"
