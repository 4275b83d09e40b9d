"""Terminal output: one rich console on stderr for progress, stdout for results."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from pbn_cli.core.progress import Progress

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


class Bar(Progress):
    """A rich progress bar that appears once its total is known; a new description starts a new bar."""

    def __init__(self, description: str, unit: str):
        self.description, self.unit = description, unit
        self._progress: RichProgress | None = None
        self._task = None

    def start(self, total: int, description: str | None = None, unit: str | None = None) -> None:
        if description is not None and description != self.description:
            self.stop()
            self._progress = None
            self.description, self.unit = description, unit if unit is not None else self.unit
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
            self._progress = RichProgress(*columns, console=err)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=total, info="")
        else:
            self._progress.update(self._task, total=total)

    def advance(self, n: int = 1) -> None:
        if self._progress is not None and n:
            self._progress.advance(self._task, n)

    def info(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, info=text)

    def message(self, text: str) -> None:
        err.print(text, highlight=False, soft_wrap=True)

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
