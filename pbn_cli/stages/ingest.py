"""ingest: paintings and their artists -> ``manifests/ingest.parquet``.

Three kinds of source, one manifest:

- a CSV with a filename and an artist column, and its image folder;
- a folder of artist folders (``FOLDER/<artist>/<painting>``, deeper levels
  allowed): the artist is the first-level folder, the image folder is FOLDER;
- a Parquet table with the images inside (one file or a folder of shards,
  as Hugging Face ``datasets`` writes them): the images are written once into
  the workspace's ``images/`` folder, named by their bytes' sha256, which
  becomes the image folder; every other column is carried along.

For files already on disk only each image's header is read (format, size,
mode) with its byte size, on all cores. Rows that cannot be paintings go to
``ingest.rejected.parquet`` with a reason: duplicate filename rows, paths
escaping the image folder, missing files, files (or table cells) that are
not images, rows without an artist.
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
from pbn_cli.data import folders, tables
from pbn_cli.data.csvfile import read_paintings_csv
from pbn_cli.data.imaging import ImageReadError, read_header
from pbn_cli.data.paths import locate, recorded_root
from pbn_cli.stages.common import StageResult, reason_counts

#: the columns pbn's stages write; a CSV's own columns of these names are not carried along
RESERVED = ("image_id", "filename", "path", "artist", "format", "width", "height", "mode", "bytes", "sha256", "split",
            "cache_row", "phash", "digest", "near_duplicate_group", "csv_row")
PROBED = ("format", "width", "height", "mode", "bytes")


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


def _probe(root: str, rels: list[str], index, workers: int | None, progress: Progress) -> pd.DataFrame:
    """Each path's header read inside ``root`` (real path), on all cores: PROBED columns and ``reason``."""
    parts = chunks(rels, 256)
    results: list[list[tuple]] = [None] * len(parts)  # type: ignore[list-item]
    n_workers = workers or default_workers()
    with worker_pool(n_workers if len(rels) > 512 else 1) as pool:
        progress.start(len(rels))

        def done(i: int, res: list[tuple]) -> None:
            results[i] = res
            progress.advance(len(res))

        map_chunks(pool, _probe_chunk, [(root, p) for p in parts], done)
    return pd.DataFrame([r for part in results for r in part], columns=[*PROBED, "reason"], index=index)


def _finish(ws: Workspace, rows: pd.DataFrame, reason: pd.Series, params: dict, inputs: dict, extra: dict,
            summary: dict | None = None) -> StageResult:
    """Write the kept rows and the rejected ones (with their reasons) atomically."""
    kept = rows[reason.isna()].copy()
    for col in ("width", "height", "bytes"):
        kept[col] = kept[col].astype("int64")
    identity = [c for c in ("image_id", "filename", "path", "artist", "csv_row") if c in rows.columns]
    rejected = rows[reason.notna()][identity].copy()
    rejected["reason"] = reason[reason.notna()]
    record = Record("ingest", params, inputs, extra=extra)
    write_manifest(ws.rejected("ingest"), rejected.reset_index(drop=True), Record("ingest.rejected", params, inputs))
    write_manifest(ws.manifest("ingest"), kept.reset_index(drop=True), record)
    return StageResult(False, len(kept), len(rejected), reason_counts(rejected), record, summary or {})


def _skipped(ws: Workspace) -> StageResult:
    record = ws.record("ingest")
    return StageResult(True, record.rows, 0, {}, record, record.extra.get("summary", {}))


def source_kind(source: Path) -> str:
    """``csv``, ``folder`` (of artist folders) or ``table`` (Parquet, a file or a folder of shards)."""
    source = Path(source)
    if tables.is_table(source):
        return "table"
    return "folder" if source.is_dir() else "csv"


def ingest(
    ws: Workspace,
    source: Path,
    *,
    images: Path | None = None,
    filename_column: str | None = None,
    artist_column: str | None = None,
    image_column: str | None = None,
    force: bool = False,
    workers: int | None = None,
    progress: Progress = SILENT,
) -> StageResult:
    """Build the ingest manifest from ``source``: a paintings CSV, a folder of artist folders, or a Parquet table."""
    kind = source_kind(source)
    given = {"--images": images, "--filename-column": filename_column, "--artist-column": artist_column,
             "--image-column": image_column}
    allowed = {"csv": ("--images", "--filename-column", "--artist-column"), "folder": (),
               "table": ("--images", "--artist-column", "--image-column")}[kind]
    wrong = [flag for flag, value in given.items() if value is not None and flag not in allowed]
    if wrong:
        what = {"csv": "a CSV", "folder": "a folder of artist folders (the artist is the first-level folder)",
                "table": "a Parquet table (its images go into the workspace)"}[kind]
        raise InputError(f"{', '.join(wrong)} does not apply to {Path(source).name}: it is {what}")
    if kind == "folder":
        return _ingest_folder(ws, Path(source), force=force, workers=workers, progress=progress)
    if kind == "table":
        return _ingest_table(ws, Path(source), images=images, artist_column=artist_column, image_column=image_column,
                             force=force, workers=workers, progress=progress)
    return _ingest_csv(ws, Path(source), images=images, filename_column=filename_column, artist_column=artist_column,
                       force=force, workers=workers, progress=progress)


def _paths_for(table) -> pd.Series:
    names = table.frame[table.filename_column].str.strip()
    if table.layout != "kaggle-all-data":
        return names
    in_train = table.frame["in_train"].str.strip().str.lower().isin(("true", "1", "yes"))
    return pd.Series(
        [("train/" if t else "test/") + n for t, n in zip(in_train, names)], index=names.index
    )


def _ingest_csv(ws: Workspace, csv_path: Path, *, images: Path | None, filename_column: str | None,
                artist_column: str | None, force: bool, workers: int | None, progress: Progress) -> StageResult:
    """A paintings CSV and its image folder (headers only)."""
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
        return _skipped(ws)

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
    probed = _probe(os.path.realpath(images), list(rows.loc[todo, "path"]), todo, workers, progress)
    reason[todo] = probed["reason"]
    for col in PROBED:
        rows[col] = probed[col]
    extra = {**recorded_root(ws, images), "layout": table.layout}
    return _finish(ws, rows, reason, params, inputs, extra)


def _ingest_folder(ws: Workspace, folder: Path, *, force: bool, workers: int | None,
                   progress: Progress) -> StageResult:
    """A folder of artist folders: every file under ``FOLDER/<artist>/`` is a painting of that artist."""
    folder = folder.resolve()
    listing = folders.list_artist_folders(folder)
    if listing.entries and all(e.rel.lower().endswith(".parquet") for e in listing.entries):
        raise InputError(f"{folder} holds Parquet tables in sub-folders ({listing.entries[0].rel}), not artist "
                         "folders: give the table's file or the folder of its shards")
    params = {"folder": str(folder), "layout": "artist-folders"}
    inputs = {"folder": listing.fingerprint}
    if not force and ws.up_to_date("ingest", params, inputs):
        return _skipped(ws)

    names = [folders.printable(e.rel) for e in listing.entries]
    rows = pd.DataFrame({"image_id": names, "filename": names, "path": names,
                         "artist": [folders.printable(e.artist).strip() for e in listing.entries]})
    reason = pd.Series([e.reason for e in listing.entries], index=rows.index, dtype=object)
    reason[(rows["artist"] == "") & reason.isna()] = "no artist given: the artist folder's name is blank"
    todo = rows.index[reason.isna()]
    root = os.path.realpath(folder)
    probed = _probe(root, list(rows.loc[todo, "path"]), todo, workers, progress)
    linked = [i for i in todo
              if probed.at[i, "reason"] == "not a file" and os.path.isdir(os.path.join(root, rows.at[i, "path"]))]
    probed.loc[linked, "reason"] = folders.LINKED_FOLDER
    reason[todo] = probed["reason"]
    for col in PROBED:
        rows[col] = probed[col]
    summary = {"artist_folders": int(rows["artist"][rows["artist"] != ""].nunique()) + len(listing.empty_artists),
               "empty_artist_folders": listing.empty_artists, "hidden_skipped": listing.hidden}
    extra = {**recorded_root(ws, folder), "layout": "artist-folders", "summary": summary}
    return _finish(ws, rows, reason, params, inputs, extra, summary)


def _extract(source: tables.TableSource, root: Path, base: Path, workers: int | None,
             progress: Progress) -> pd.DataFrame:
    """Every image of the table written into ``root``, batch by batch on all cores, in row order (rows with only a
    path read from their files inside ``base``)."""
    tables.sweep_temporary(root)
    root.mkdir(parents=True, exist_ok=True)
    results: dict[int, list[tuple]] = {}
    with worker_pool((workers or default_workers()) if source.rows > 256 else 1) as pool:
        progress.start(source.rows, "ingest: extracting images", "images")

        def done(i: int, res: list[tuple]) -> None:
            results[i] = res
            progress.advance(len(res))

        real = os.path.realpath(base)
        batches = ((str(root), datas, names, real) for datas, names in tables.image_batches(source))
        map_chunks(pool, tables.extract_batch, batches, done)  # read lazily: a few batches in flight
    rows = [r for i in sorted(results) for r in results[i]]
    return pd.DataFrame(rows, columns=["own_path", "path", *PROBED, "reason"])


def _ingest_table(ws: Workspace, path: Path, *, images: Path | None, artist_column: str | None,
                  image_column: str | None, force: bool, workers: int | None, progress: Progress) -> StageResult:
    """A Parquet table with the images inside: images written into the workspace, other columns carried along.
    Rows that hold only a path are read from that file, relative to the table's folder or ``images``."""
    source = tables.open_tables(path, image_column=image_column, artist_column=artist_column)
    root = ws.images.resolve()
    base = Path(images).resolve() if images else (source.path if source.path.is_dir() else source.path.parent).resolve()
    if images and not base.is_dir():
        raise InputError(f"image folder {base} does not exist; point --images to the folder the table's paths are in")
    params = {"table": str(source.path), "layout": "table", "image_column": source.image_column,
              "artist_column": source.artist_column, "images": str(root), "paths_from": str(base)}
    inputs = {"table": source.fingerprint}
    if not force and ws.up_to_date("ingest", params, inputs) and root.is_dir():
        return _skipped(ws)

    frame = tables.read_columns(source)
    images = _extract(source, root, base, workers, progress)
    if len(images) != len(frame):
        raise InputError(f"{source.path} changed while it was read: run `pbn ingest` again")
    ids = [f"{source.names[s]}#{r}" for s, r in zip(frame["_pbn_shard"], frame["_pbn_row"])]
    artists = frame[source.artist_column]
    rows = pd.DataFrame({
        "image_id": ids,
        "filename": [own if isinstance(own, str) and own else i for own, i in zip(images["own_path"], ids)],
        "path": images["path"],
        "artist": ["" if pd.isna(a) else str(a).strip() for a in artists],
    })
    for col in source.other_columns:
        if col != source.artist_column and col not in RESERVED:
            rows[col] = frame[col]
    for col in PROBED:
        rows[col] = images[col]
    reason = images["reason"].copy()
    reason[(rows["artist"] == "") & reason.isna()] = "no artist given"
    kept_paths = rows["path"][reason.isna()]
    summary = {"shards": len(source.shards), "image_folder": str(root), "images": int(kept_paths.nunique()),
               "rows_sharing_bytes": int(kept_paths.duplicated().sum()), "columns_not_carried": source.skipped}
    extra = {**recorded_root(ws, root), "layout": "table", "summary": summary}
    return _finish(ws, rows, reason, params, inputs, extra, summary)
