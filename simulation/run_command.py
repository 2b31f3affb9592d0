"""``fedtune run``: ``flwr run --stream``, then the run's own status as the exit status.

``flwr run --stream`` exits 0 however the run ended (Flower 1.41 does not report it), so a run
that stopped on bad input, or failed in its third hour, looks like success to a script or a CI
job. This command passes its arguments to ``flwr run`` (the app folder, the SuperLink, and any
option such as ``--run-config`` or ``--federation-config``), shows the run's output as it
streams, then asks the SuperLink for the run's status (``flwr ls --run-id ID --format json``)
and exits 0 only when the run finished as completed.

    fedtune run . --federation-config "num-supernodes=10 client-resources-num-cpus=1"
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys

COMPLETED = "finished:completed"
_RUN_ID = re.compile(r"run(?:_id| ID)?[ `:]*`?(\d{6,})")


def _flwr() -> str:
    found = shutil.which("flwr")
    if found is None:
        raise SystemExit("fedtune: the `flwr` command is not on PATH; activate the environment")
    return found


def run_id_of(output: str) -> int | None:
    """The run ID that ``flwr run`` printed, if it printed one."""
    match = _RUN_ID.search(output)
    return int(match.group(1)) if match else None


def run_status(run_id: int, superlink: list[str]) -> tuple[str, str]:
    """(status, details) of a run, as the SuperLink reports them."""
    listed = subprocess.run(
        [_flwr(), "ls", *superlink, "--run-id", str(run_id), "--format", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        run = json.loads(listed.stdout)["runs"][0]
    except (ValueError, KeyError, IndexError):
        return "unknown", (listed.stdout + listed.stderr).strip()[-300:]
    return str(run.get("status", "unknown")), str(run.get("status-details", ""))


def _streamed(command: list[str]) -> tuple[int, str]:
    """Run ``command``, echoing its output as it comes; its exit code and its output."""
    lines = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
    return proc.returncode, "".join(lines)


def run(argv: list[str]) -> int:
    """``fedtune run [APP] [SUPERLINK] [flwr run options]``: the run's status as exit status."""
    parser = argparse.ArgumentParser(prog="fedtune run", description=__doc__.splitlines()[0])
    parser.add_argument("app", nargs="?", default=".", help="the Flower App folder (default: .)")
    parser.add_argument(
        "superlink", nargs="?", help="the SuperLink connection, as flwr run takes it"
    )
    args, options = parser.parse_known_args(argv)
    superlink = [args.superlink] if args.superlink else []
    command = [_flwr(), "run", args.app, *superlink, "--stream", *options]
    code, output = _streamed(command)
    run_id = run_id_of(output)
    if run_id is None:
        print(f"fedtune: flwr run started no run (exit code {code})", file=sys.stderr)
        return code or 1
    status, details = run_status(run_id, superlink)
    if status != COMPLETED:
        print(f"fedtune: run {run_id} ended {status}: {details}", file=sys.stderr)
        return 1
    print(f"fedtune: run {run_id} {status}")
    return 0
