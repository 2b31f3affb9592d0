"""The Flower ServerApp: build the run, loop over its rounds, leave what it made."""

from __future__ import annotations

from logging import ERROR

from flwr.app import Context
from flwr.common import log
from flwr.serverapp import Grid, ServerApp

from federated.config import ConfigError
from server.round_loop import run_rounds
from server.run import build_run
from server.run_summary import finish_run
from server.start_checks import RunFailure

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        run = build_run(grid, context)
        with run.tracking:  # its run ends as finished, or failed when this one raises
            finish_run(run, run_rounds(grid, run))
    except (ConfigError, RunFailure, FileExistsError) as err:
        log(ERROR, "fedtune: %s", err)
        raise RunFailure(str(err)) from None  # Flower records the run as failed
    except OSError as err:
        if err.filename is None:  # not a file the run writes: a fault to report in full
            raise
        # Files are replaced whole (federated.atomic_file): the last complete checkpoint stays.
        line = (
            f"could not write {err.filename} ({err.strerror}); what was written before, "
            "the last finished round's checkpoint included, is kept: fedtune results "
            "RUN_DIR says how to resume"
        )
        log(ERROR, "fedtune: %s", line)
        raise RunFailure(line) from None
