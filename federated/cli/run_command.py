"""``fedtune run``: ``flwr run --stream``, then the run's own status as the exit status.

``flwr run --stream`` exits 0 however the run ended (Flower 1.41 does not report it), so a run
that stopped on bad input, or failed in its third hour, looks like success to a script or a CI
job. This command passes its arguments to ``flwr run`` (the app folder, the SuperLink, and any
option such as ``--run-config`` or ``--federation-config``), shows the run's output as it
streams, then asks the SuperLink for the run's status (``flwr ls --run-id ID --format json``)
and exits 0 only when the run finished as completed.

It always ends: when the stream stays silent past a run that already ended, it stops waiting
for it. Ctrl-C (or SIGTERM) stops the run itself through the SuperLink (``flwr stop``), where
``flwr run`` alone would leave it going on in the background, asks the server to stop before its
next round (``federated.protocol.stop_request``: a simulation hears of ``flwr stop`` only at
its next heartbeat), and prints the line that resumes the run from its last checkpoint.

Before the run it names the SuperLink it will use, and refuses a local one started in another
folder (``federated.cli.local_superlink``). Several ``--run-config`` options are merged key by
key (``federated.cli.run_config_merge``), where ``flwr run`` would drop keys.

    fedtune run . --federation-config "num-supernodes=10 client-resources-num-cpus=1"
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from federated.cli.gpu_share import check_gpu_share
from federated.cli.local_superlink import ForeignSuperLink, superlink_in_use
from federated.cli.run_config_merge import merge_run_configs
from federated.deploy.shell_line import shell_line
from federated.protocol.stop_request import await_stop, request_stop
from federated.results import CHECKPOINT_INFO, SUMMARY_FILE

COMPLETED = "finished:completed"
_RUN_ID = re.compile(r"run(?:_id| ID)?[ `:]*`?(\d{6,})")
# The ServerApp's line naming the run's folder (a new run's, or the one a resume goes on in).
_FOLDER = re.compile(r"fedtune: (?:writing results to|resuming) (\S+)")
# How long the stream may stay silent before the SuperLink is asked whether the run is over,
# and how long the stream may go on once the run has ended (or was asked to stop).
QUIET_SECONDS = 60.0
GRACE_SECONDS = 30.0
# Past Flower's heartbeat (20-25 s), after which a stopped simulation has surely gone.
STOP_SECONDS = 40.0


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
    """(status, details) of a run, as the SuperLink reports them ("unknown" if it cannot)."""
    listed = subprocess.run(
        [_flwr(), "ls", *superlink, "--run-id", str(run_id), "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        run = json.loads(listed.stdout)["runs"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return "unknown", ""
    return str(run.get("status", "unknown")), str(run.get("status-details", ""))


class _Stream:
    """``flwr run --stream`` as a child in a session of its own, so that Ctrl-C reaches this
    process alone (which then stops the run), with its output echoed as it comes."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.run_id: int | None = None
        self.folder: Path | None = None
        self.last_line_at = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            self.last_line_at = time.monotonic()
            if self.run_id is None:
                self.run_id = run_id_of(line)
            if match := _FOLDER.search(line):
                self.folder = Path(match.group(1))

    def open(self) -> bool:
        return self.reader.is_alive()

    def wait(self, seconds: float) -> None:
        self.reader.join(timeout=seconds)

    def close(self) -> None:
        """End ``flwr run`` if it is still there (a local SuperLink it started runs detached)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait()
        self.reader.join(timeout=5)


class _Signals:
    """Ctrl-C and SIGTERM, noted rather than raised, so that the run can be stopped cleanly."""

    def __init__(self) -> None:
        self.received: int | None = None
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self._note)

    def _note(self, number: int, _frame: FrameType | None) -> None:
        if self.received is not None:  # asked twice: stop waiting for the run to stop
            raise SystemExit(128 + number)
        self.received = number


def resume_line(argv: list[str], folder: Path | None) -> str:
    """What goes on from ``folder``'s last checkpoint, or why nothing can."""
    if folder is None:
        return "the run named no results folder yet: nothing to resume"
    if (folder / SUMMARY_FILE).is_file():
        return f"the run had finished all its rounds: results in {folder}"
    info = folder / CHECKPOINT_INFO
    if not info.is_file():
        return f"no round finished, so {folder} holds no checkpoint to resume from"
    done = json.loads(info.read_text())["round"]
    # A later --run-config overrides an earlier one, so the run's own options stay as they were.
    line = shell_line(["fedtune", "run", *argv, "--run-config", f"resume='{folder}'"])
    return f"the checkpoint after round {done} is kept in {folder}; go on with:\n  {line}"


def _follow(stream: _Stream, signals: _Signals, superlink: list[str]) -> None:
    """Wait for the stream to end, a signal, or a run that ended while its stream stays open."""
    while stream.open() and signals.received is None:
        stream.wait(1.0)
        quiet = time.monotonic() - stream.last_line_at
        if stream.run_id is None or quiet < QUIET_SECONDS or not stream.open():
            continue
        if run_status(stream.run_id, superlink)[0].startswith("finished"):
            stream.wait(GRACE_SECONDS)
            return
        stream.last_line_at = time.monotonic()  # ask again after another quiet spell


def _stop(stream: _Stream, signals: _Signals, superlink: list[str], argv: list[str]) -> int:
    name = signal.Signals(signals.received or signal.SIGINT).name
    if stream.run_id is None:
        stream.close()
        print(f"fedtune: {name}: stopped before the SuperLink started a run", file=sys.stderr)
        return 128 + (signals.received or signal.SIGINT)
    print(f"fedtune: {name}: stopping run {stream.run_id} (flwr stop)...", file=sys.stderr)
    here = stream.folder is not None and stream.folder.is_dir()  # a server on this machine
    if here:
        request_stop(stream.folder)
    subprocess.run(
        [_flwr(), "stop", str(stream.run_id), *superlink], capture_output=True, check=False
    )
    stream.wait(GRACE_SECONDS)
    stream.close()
    if here:
        await_stop(stream.folder, STOP_SECONDS)
    status, _ = run_status(stream.run_id, superlink)
    print(
        f"fedtune: run {stream.run_id} {status}; {resume_line(argv, stream.folder)}",
        file=sys.stderr,
    )
    return 128 + (signals.received or signal.SIGINT)


def run(argv: list[str]) -> int:
    """``fedtune run [APP] [SUPERLINK] [flwr run options]``: the run's status as exit status."""
    parser = argparse.ArgumentParser(prog="fedtune run", description=__doc__.splitlines()[0])
    parser.add_argument("app", nargs="?", default=".", help="the Flower App folder (default: .)")
    parser.add_argument(
        "superlink", nargs="?", help="the SuperLink connection, as flwr run takes it"
    )
    args, options = parser.parse_known_args(argv)
    superlink = [args.superlink] if args.superlink else []
    try:
        in_use = superlink_in_use(args.superlink, Path.cwd())
    except ForeignSuperLink as err:
        print(f"fedtune run: {err}", file=sys.stderr)
        return 2
    if in_use is not None:
        print(f"fedtune run: {in_use}", file=sys.stderr)
    if problem := check_gpu_share(Path(args.app), options):
        print(f"fedtune run: {problem}", file=sys.stderr)
        return 2
    signals = _Signals()
    command = [_flwr(), "run", args.app, *superlink, "--stream", *merge_run_configs(options)]
    stream = _Stream(command)
    try:
        _follow(stream, signals, superlink)
        if signals.received is not None:
            return _stop(stream, signals, superlink, argv)
    finally:
        stream.close()
    if stream.run_id is None:
        print(
            f"fedtune: flwr run started no run (exit code {stream.proc.returncode})",
            file=sys.stderr,
        )
        return stream.proc.returncode or 1
    status, details = run_status(stream.run_id, superlink)
    if status == COMPLETED:
        print(f"fedtune: run {stream.run_id} {status}")
        return 0
    if status == "unknown":
        print(
            f"fedtune: the SuperLink did not answer for run {stream.run_id}: it stopped or "
            f"cannot be reached; once it is back, {resume_line(argv, stream.folder)}",
            file=sys.stderr,
        )
        return 1
    print(f"fedtune: run {stream.run_id} ended {status}: {details}", file=sys.stderr)
    return 1
