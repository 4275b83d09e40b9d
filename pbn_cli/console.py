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
