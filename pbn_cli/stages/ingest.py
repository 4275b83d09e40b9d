"""ingest: a paintings CSV and its image folder -> ``manifests/ingest.parquet``.

Reads each image's header only (format, size, mode) and its byte size, on
all cores. Rows that cannot be paintings go to ``ingest.rejected.parquet``
with a reason: duplicate filename rows, paths escaping the image folder,
missing files, files that are not images.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pbn_cli.core.errors import InputError
from pbn_cli.core.manifest import Record, file_digest, write_manifest
from pbn_cli.core.parallel import chunks, default_workers, map_chunks, worker_pool
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.csvfile import read_paintings_csv
from pbn_cli.data.imaging import ImageReadError, read_header
from pbn_cli.data.paths import locate
from pbn_cli.stages.common import StageResult, reason_counts

#: the columns pbn's stages write; a CSV's own columns of these names are not carried along
RESERVED = ("image_id", "filename", "path", "artist", "format", "width", "height", "mode", "bytes", "sha256", "split",
            "cache_row", "phash", "digest", "near_duplicate_group", "csv_row")


def _probe_chunk(args: tuple[str, Sequence[str]]) -> list[tuple]:
    """(format, width, height, mode, bytes, reason) for each relative path."""
    root, rels = args
    out = []
    for rel in rels:
        full, reason = locate(root, rel)
        if reason:
            out.append((None, None, None, None, None, reason))
            continue
        try:
            nbytes = os.stat(full).st_size
            h = read_header(full, nbytes)
            out.append((h.format, h.width, h.height, h.mode, nbytes, None))
        except ImageReadError as err:
            out.append((None, None, None, None, None, str(err)))
    return out


def _paths_for(table) -> pd.Series:
    names = table.frame[table.filename_column].str.strip()
    if table.layout != "kaggle-all-data":
        return names
    in_train = table.frame["in_train"].str.strip().str.lower().isin(("true", "1", "yes"))
    return pd.Series(
        [("train/" if t else "test/") + n for t, n in zip(in_train, names)], index=names.index
    )


def ingest(
    ws: Workspace,
    csv_path: Path,
    *,
    images: Path | None = None,
    filename_column: str | None = None,
    artist_column: str | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: Progress = SILENT,
) -> StageResult:
    """Build the ingest manifest from ``csv_path`` and the image folder."""
    csv_path = Path(csv_path).resolve()
    table = read_paintings_csv(csv_path, filename_column, artist_column)
    if images is None:
        images = csv_path.parent if table.layout == "kaggle-all-data" else csv_path.parent / "train"
    images = Path(images).resolve()
    if not images.is_dir():
        raise InputError(f"image folder {images} does not exist; point to it with --images")
    params = {
        "csv": str(csv_path),
        "images": str(images),
        "filename_column": table.filename_column,
        "artist_column": table.artist_column,
    }
    inputs = {"csv": file_digest(csv_path)[:16]}
    if not force and ws.up_to_date("ingest", params, inputs):
        return StageResult(True, ws.record("ingest").rows, 0, {})

    frame = table.frame
    rows = pd.DataFrame(
        {
            "image_id": frame[table.filename_column].str.strip(),
            "filename": frame[table.filename_column],
            "path": _paths_for(table),
            "artist": frame[table.artist_column].str.strip(),
            "csv_row": frame["csv_row"],
        }
    )
    for col in frame.columns:
        if col not in (table.filename_column, table.artist_column, "csv_row") and col not in RESERVED:
            rows[col] = frame[col]

    reason = pd.Series([None] * len(rows), index=rows.index, dtype=object)
    first_row = rows.groupby("image_id", sort=False)["csv_row"].transform("min")
    dup = rows["image_id"].duplicated(keep="first")
    reason[dup] = "duplicate row: filename already listed on CSV row " + first_row[dup].astype(str)
    reason[(rows["artist"] == "") & reason.isna()] = "no artist given"

    todo = rows.index[reason.isna()]
    root = os.path.realpath(images)
    parts = chunks(list(rows.loc[todo, "path"]), 256)
    results: list[list[tuple]] = [None] * len(parts)  # type: ignore[list-item]
    n_workers = workers or default_workers()
    with worker_pool(n_workers if len(todo) > 512 else 1) as pool:
        progress.start(len(todo))

        def done(i: int, res: list[tuple]) -> None:
            results[i] = res
            progress.advance(len(res))

        map_chunks(pool, _probe_chunk, [(root, p) for p in parts], done)
    probed = pd.DataFrame(
        [r for part in results for r in part],
        columns=["format", "width", "height", "mode", "bytes", "reason"],
        index=todo,
    )
    reason[todo] = probed["reason"]
    for col in ("format", "width", "height", "mode", "bytes"):
        rows[col] = probed[col]

    kept = rows[reason.isna()].copy()
    for col in ("width", "height", "bytes"):
        kept[col] = kept[col].astype("int64")
    rejected = rows[reason.notna()][["image_id", "filename", "path", "artist", "csv_row"]].copy()
    rejected["reason"] = reason[reason.notna()]
    record = Record("ingest", params, inputs, extra={"image_root": str(images), "layout": table.layout})
    write_manifest(ws.rejected("ingest"), rejected, Record("ingest.rejected", params, inputs))
    write_manifest(ws.manifest("ingest"), kept.reset_index(drop=True), record)
    return StageResult(False, len(kept), len(rejected), reason_counts(rejected), record)
