"""How long work reports to the person waiting: one protocol for every stage and command.

Library functions take a ``progress`` argument and call ``start`` when they
know how much work a phase holds, ``advance`` as it gets done, ``info`` for
a short figure after the bar (the loss, say) and ``message`` for a line of
its own. The CLI passes a rich progress bar; the default says nothing.
"""

from __future__ import annotations


class Progress:
    """Says nothing; the CLI's bar (cli/console.py) implements the same four calls."""

    def start(self, total: int, description: str | None = None, unit: str | None = None) -> None:
        """A phase of ``total`` units begins (``description`` names it when there are several; ``unit``: what is counted)."""

    def advance(self, n: int = 1) -> None:
        """``n`` more units are done."""

    def info(self, text: str) -> None:
        """A short figure to show beside the bar."""

    def message(self, text: str) -> None:
        """A line of its own (an epoch's figures, a warning)."""


SILENT = Progress()
