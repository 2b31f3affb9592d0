"""TensorBoard as a run's tracker: event files in ``RUN_DIR/tensorboard``.

Each number is a scalar, which TensorBoard keeps as a 32-bit float (about 7 digits: its default
loader shows no other kind); the run config is a text summary, a table of its keys, and the
HParams tab's parameters of the run. The run's plots go in as images when it finishes;
TensorBoard keeps no other files (the adapter and summary stay in the run folder). A resumed run
writes into the same folder from the step after the last round it holds, hiding any later steps
a dying launch wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

FOLDER = "tensorboard"
# Logged last of a round's numbers: the round a resume finds complete.
STEP_TAG = "round"


class TensorBoardBackend:
    name = "tensorboard"

    def __init__(self, run_folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = run_folder / FOLDER
        self.new = not self.folder.is_dir() or not any(self.folder.iterdir())
        self._last = None if self.new else last_step(self.folder)
        purge = None if self._last is None else self._last + 1
        self.writer = SummaryWriter(str(self.folder), purge_step=purge)
        self.browse = f"tensorboard --logdir {self.folder}"

    def last_step(self) -> int | None:
        return self._last

    def log_params(self, params: Mapping[str, str]) -> None:
        from torch.utils.tensorboard.summary import hparams

        rows = ["| key | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in params.items())]
        self.writer.add_text("config", "\n".join(rows), global_step=0)
        # Into this run's own event file (SummaryWriter.add_hparams would open a run beside it).
        for summary in hparams(dict(params), {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        ordered = sorted(metrics.items(), key=lambda item: item[0] == STEP_TAG)
        for key, value in ordered:
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_artifacts(self, paths: list[Path]) -> None:
        """The run's PNG plots as images, each under its file's name; TensorBoard keeps no
        other files."""
        from matplotlib.image import imread

        for path in paths:
            if path.suffix == ".png":
                pixels = imread(path)[..., :3]  # RGB: TensorBoard's images take no alpha here
                self.writer.add_image(f"plots/{path.stem}", pixels, 0, dataformats="HWC")
        self.writer.flush()

    def close(self, failed: bool) -> None:
        self.writer.close()


def last_step(folder: Path) -> int | None:
    """The last round the event files in ``folder`` hold whole."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    if STEP_TAG not in events.Tags()["scalars"]:
        return None
    return max(event.step for event in events.Scalars(STEP_TAG))
