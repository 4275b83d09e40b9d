"""--where: which of the workspace's paintings a search may answer with, by the columns the workspace holds.

A filter is ``COLUMN OP VALUE``: ``style=Baroque``, ``artist!=Rembrandt``,
``date>=1600``, ``title~harbour`` (``~``: contains, ignoring case). Several
filters must all hold. ``=`` and ``!=`` compare text (ignoring case and
surrounding spaces); ``<``, ``<=``, ``>``, ``>=`` compare the first number in
each value, so ``c. 1650`` counts as 1650 and a painting without a number in
that column never passes. The columns: ``split``, ``artist``, ``image_id`` and
every column the ingested CSV (or table) carried (style, genre, date ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pbn_cli.core.errors import InputError

OPS = ("!=", ">=", "<=", "=", ">", "<", "~")
#: columns pbn keeps for itself: not offered as filters
INTERNAL = {"cache_row", "digest", "sha256", "csv_row", "phash", "near_duplicate_group", "path"}
_FORM = re.compile(r"^\s*([^!<>=~]+?)\s*(!=|>=|<=|=|>|<|~)\s*(.*?)\s*$")
_NUMBER = r"(-?\d+(?:\.\d+)?)"


@dataclass(frozen=True)
class Filter:
    column: str
    op: str
    value: str

    def holds(self, table: pd.DataFrame) -> np.ndarray:
        col = table[self.column]
        if self.op in ("=", "!="):
            same = col.astype(str).str.strip().str.casefold() == self.value.casefold()
            return (same if self.op == "=" else ~same).to_numpy()
        if self.op == "~":
            return col.astype(str).str.contains(self.value, case=False, regex=False).to_numpy()
        number = float(self.value)
        values = pd.to_numeric(col.astype(str).str.extract(_NUMBER, expand=False), errors="coerce").to_numpy()
        with np.errstate(invalid="ignore"):
            return {">": values > number, ">=": values >= number, "<": values < number, "<=": values <= number}[self.op]


def columns(table: pd.DataFrame) -> list[str]:
    """The columns a filter may name."""
    return [c for c in table.columns if c not in INTERNAL]


def parse(text: str, table: pd.DataFrame) -> Filter:
    """One ``COLUMN OP VALUE`` against ``table``'s columns; a malformed one or an unknown column is one line."""
    names = columns(table)
    found = _FORM.match(text)
    if not found:
        raise InputError(f"--where {text!r}: write COLUMN OP VALUE with OP one of {' '.join(OPS)} "
                         f"(e.g. style=Baroque, date>=1600); columns: {', '.join(names)}")
    column, op, value = found.groups()
    if column not in names:
        raise InputError(f"--where {text!r}: no column {column!r}; columns: {', '.join(names)}")
    if op in ("<", "<=", ">", ">=") and not re.fullmatch(_NUMBER, value):
        raise InputError(f"--where {text!r}: {op} compares numbers; give one (e.g. {column}{op}1600)")
    return Filter(column, op, value)


def mask(table: pd.DataFrame, texts: list[str] | None) -> np.ndarray | None:
    """Rows of ``table`` that pass every filter of ``texts`` (None when there are none)."""
    if not texts:
        return None
    keep = np.ones(len(table), bool)
    for text in texts:
        keep &= parse(text, table).holds(table)
    return keep
