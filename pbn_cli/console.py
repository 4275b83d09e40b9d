"""Terminal output: one rich console on stderr for progress, stdout for results."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


class Bar:
    """A progress bar that appears only once its total is known (``start``)."""

    def __init__(self, description: str, unit: str):
        self.description, self.unit = description, unit
        self._progress: Progress | None = None
        self._task = None

    def start(self, total: int) -> None:
        if self._progress is None:
            columns = [
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(self.unit),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
            ]
            self._progress = Progress(*columns, console=err)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=total, info="")
        else:
            self._progress.update(self._task, total=total)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def info(self, text: str) -> None:
        """Extra text after the bar (loss, images/s...)."""
        if self._progress is not None:
            self._progress.update(self._task, info=text)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextlib.contextmanager
def progress(description: str, unit: str = "") -> Iterator[Bar]:
    """A rich progress bar on stderr with count, elapsed time and ETA, shown once started."""
    bar = Bar(description, unit)
    try:
        yield bar
    finally:
        bar.stop()


def callbacks(bar: Bar) -> tuple[Callable[[int], None], Callable[[int], None]]:
    return bar.start, bar.advance


class TrainReporter:
    """Training progress on the terminal: the bar, a line per epoch, messages."""

    def __init__(self, bar: Bar):
        self.bar = bar
        self._t0 = None

    def start(self, total: int) -> None:
        self.bar.start(total)

    def advance(self, n: int = 1) -> None:
        self.bar.advance(n)

    def info(self, text: str) -> None:
        self.bar.info(text)

    def message(self, text: str) -> None:
        err.print(text, highlight=False)

    def epoch(self, row: dict) -> None:
        err.print(
            f"epoch {row['epoch']}: loss {row['train_loss']:.4f}, val triplet acc "
            f"{row['val_triplet_accuracy']:.3f}, val AUC {row['val_pair_auc']:.3f}, "
            f"{row['images_per_s']:.0f} img/s",
            highlight=False,
            soft_wrap=True,
        )
