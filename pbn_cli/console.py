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
    """A progress bar whose total may be set once the work is known."""

    def __init__(self, progress: Progress, task):
        self._progress, self._task = progress, task

    def start(self, total: int) -> None:
        self._progress.update(self._task, total=total, visible=True)

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def update(self, **fields) -> None:
        self._progress.update(self._task, **fields)


@contextlib.contextmanager
def progress(description: str, total: int | None = None, unit: str = "") -> Iterator[Bar]:
    """A rich progress bar on stderr; shows count, elapsed time and ETA."""
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err, transient=False) as p:
        yield Bar(p, p.add_task(description, total=total, visible=total is not None))


def callbacks(bar: Bar) -> tuple[Callable[[int], None], Callable[[int], None]]:
    return bar.start, bar.advance
