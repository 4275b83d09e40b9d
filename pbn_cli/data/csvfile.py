"""Reading the paintings CSV: Kaggle's files or any filename/artist table."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pbn_cli.core.errors import InputError, listed

FILENAME_GUESSES = ("filename", "new_filename", "file", "image", "path")
ARTIST_GUESSES = ("artist", "painter", "author")


@dataclass
class PaintingsCsv:
    """The rows of a paintings CSV with the columns that matter named."""

    frame: pd.DataFrame  # every column as text, plus `csv_row`
    filename_column: str
    artist_column: str
    layout: str  # "plain" or "kaggle-all-data" (images under train/ or test/)


def _pick(columns: list[str], wanted: str | None, guesses: tuple[str, ...], what: str, flag: str) -> str:
    if wanted:
        if wanted not in columns:
            raise InputError(
                f"the CSV has no column {wanted!r} (it has: {listed(columns)})"
            )
        return wanted
    lower = {c.strip().lower(): c for c in columns}
    for guess in guesses:
        if guess in lower:
            return lower[guess]
    raise InputError(
        f"the CSV has no {what} column (looked for {', '.join(guesses)}; it has: "
        f"{listed(columns)}); name it with {flag}"
    )


def read_paintings_csv(
    path: Path, filename_column: str | None = None, artist_column: str | None = None
) -> PaintingsCsv:
    """Parse ``path`` strictly: UTF-8 (BOM allowed), quoted fields, every row the same width."""
    if not path.is_file():
        raise InputError(f"CSV file {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{path} is not UTF-8 text (byte {raw[err.start]:#04x} at offset {err.start}); "
            "save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise InputError(f"{path} contains NUL bytes: it is not a text CSV")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as err:
        raise InputError(f"{path} is not a well-formed CSV: {err}") from None
    rows = [r for r in rows if r]
    if not rows:
        raise InputError(f"{path} is empty: expected a header row and one row per painting")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise InputError(f"{path} has repeated column names: {listed(header)}")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(
                f"{path} row {line} has {len(row)} fields but the header has {len(header)}"
            )
    if len(rows) == 1:
        raise InputError(f"{path} has a header but no paintings")
    frame = pd.DataFrame(rows[1:], columns=header, dtype=str)
    frame["csv_row"] = range(2, len(rows) + 1)
    layout = "plain"
    if filename_column is None and "new_filename" in header and "in_train" in header:
        layout = "kaggle-all-data"
    fcol = _pick(header, filename_column, FILENAME_GUESSES, "filename", "--filename-column")
    acol = _pick(header, artist_column, ARTIST_GUESSES, "artist", "--artist-column")
    return PaintingsCsv(frame, fcol, acol, layout)
