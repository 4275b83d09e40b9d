"""resize: every painting decoded once into the 256x256 cache.

Paintings of ``clean.parquet`` not cached yet get new rows at the end of
``cache/images_<size>.npy``. Work is planned in a journal beside the cache
(``images_<size>.journal``): first the plan (image_id -> row), then one line
per finished painting, written only after its pixels are on disk. A killed
run reads the journal and does only what is left, so the cache ends
byte-identical to an uninterrupted run's. ``manifests/resize.parquet`` maps
image_id to ``cache_row``; undecodable files go to ``resize.rejected.parquet``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pbn_cli.core.atomic import write_text
from pbn_cli.core.errors import InputError, PbnError
from pbn_cli.core.manifest import Record, read_manifest, write_manifest
from pbn_cli.core.parallel import chunks, default_workers, map_chunks, worker_pool
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.workspace import Workspace
from pbn_cli.data import cache, imaging
from pbn_cli.data.near_duplicates import near_duplicate_groups, phash
from pbn_cli.data.paths import image_root, locate
from pbn_cli.data.preview import contact_sheet, save_png
from pbn_cli.stages.common import StageResult, reason_counts

_worker: dict = {}
CACHED = ["cache_row", "phash", "digest"]  # what resize.parquet adds to each painting


def _init_worker(cache_file: str, size: int, fit: str, max_pixels: int, root: str, lock) -> None:
    _worker.update(
        fd=os.open(cache_file, os.O_RDWR),
        offset=cache.header_length(size),
        size=size,
        fit=fit,
        max_pixels=max_pixels,
        root=root,
    )
    imaging.set_big_image_lock(lock)


def _resize_chunk(items: Sequence[tuple[str, str, int]]) -> list[tuple[str, int, str | None, int | None, str | None]]:
    """Decode, fit and write each (image_id, path, row); returns (image_id, row, reason, phash, pixels digest)."""
    w = _worker
    out = []
    for image_id, rel, row in items:
        full, reason = locate(w["root"], rel)
        if reason is None:
            try:
                pixels = imaging.load_rgb(full, w["size"], w["fit"], w["max_pixels"])
            except imaging.ImageReadError as err:
                reason = str(err)
        if reason is not None:
            out.append((image_id, row, reason, None, None))
            continue
        os.pwrite(w["fd"], pixels.tobytes(), w["offset"] + row * cache.row_bytes(w["size"]))
        out.append((image_id, row, None, phash(pixels), cache.pixels_digest(pixels)))
    return out


class _Journal:
    """The plan and the finished paintings of one resize run, append-only."""

    def __init__(self, path: Path):
        self.path = path

    def read(self, size: int, fit: str) -> tuple[int, list, dict] | None:
        if not self.path.exists():
            return None
        lines = self.path.read_bytes().decode("utf-8", "replace").splitlines()
        try:  # a damaged plan means starting afresh: the journal is only a record of work done
            plan = json.loads(lines[0])
            if plan.get("size") != size or plan.get("fit") != fit:
                return None
            rows, items = int(plan["rows"]), list(plan["items"])
        except (IndexError, ValueError, TypeError, AttributeError, KeyError):
            return None
        done = {}
        for line in lines[1:]:
            try:
                image_id, row, reason, h, *digest = json.loads(line)
            except (ValueError, TypeError):
                break  # a line cut short by a kill: everything after it is redone
            done[image_id] = (row, reason, h, digest[0] if digest else None)
        return rows, items, done

    def start(self, size: int, fit: str, rows: int, items: list) -> None:
        """Record the plan: the cache will hold ``rows`` rows; ``items`` are [image_id, path, row]."""
        write_text(self.path, json.dumps({"size": size, "fit": fit, "rows": rows, "items": items}) + "\n")

    def append(self, results: list) -> None:
        with open(self.path, "a") as f:
            f.writelines(json.dumps(list(r)) + "\n" for r in results)
            f.flush()
            os.fsync(f.fileno())


def _check_disk(folder: Path, needed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise PbnError(
            f"the cache needs {needed / 1e9:.1f} GB more in {folder}, but only "
            f"{free / 1e9:.1f} GB is free; free some space or move the workspace"
        )


def resize(
    ws: Workspace,
    *,
    size: int | None = None,
    fit: str | None = None,
    workers: int | None = None,
    max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
    force: bool = False,
    images: Path | None = None,
    progress: Progress = SILENT,
) -> StageResult:
    """Cache every painting of the clean manifest at ``size`` px; resumable and incremental.

    ``size`` and ``fit`` default to the workspace's cache (256 px, crop, for a new one)."""
    previous = ws.record("resize")
    cached = previous.params if previous is not None and not force else {}
    size, fit = size or cached.get("size", 256), fit or cached.get("fit", "crop")
    if fit not in imaging.FITS:
        raise InputError(f"--fit must be one of {', '.join(imaging.FITS)}, got {fit!r}")
    if not 16 <= size <= 2048:
        raise InputError(f"--size must be between 16 and 2048, got {size}")
    up = ws.require("clean")
    params = {"size": size, "fit": fit, "max_pixels": max_pixels}
    inputs = {"clean": up.fingerprint}
    if previous is not None and not force:
        old = previous.params
        if (old.get("size"), old.get("fit")) != (size, fit):
            raise InputError(
                f"the cache holds {old.get('size')} px paintings ({old.get('fit')}); one size per "
                f"workspace: rebuild with `pbn resize --size {size} --fit {fit} --force`"
            )
        if ws.up_to_date("resize", params, inputs):
            return StageResult(True, previous.rows, 0, {}, previous, previous.extra.get("summary", {}))
    path = cache.cache_path(ws.cache, size)
    journal = _Journal(path.with_suffix(".journal"))
    if force:
        for stale in ws.cache.glob("images_*"):
            stale.unlink()
        for stage in ("resize",):
            ws.manifest(stage).unlink(missing_ok=True)
            ws.rejected(stage).unlink(missing_ok=True)

    frame, _ = read_manifest(ws.manifest("clean"))
    done_rows, done_rejected = _previous(ws)
    resumed = journal.read(size, fit)
    items, finished = _plan(ws, frame, done_rows, done_rejected, path, journal, size, fit, resumed)
    pending = [tuple(it) for it in items if it[0] not in finished]
    n_workers = min(workers or default_workers(), max(1, len(pending) // 8))
    args = (str(path), size, fit, max_pixels, image_root(ws, up, images), imaging.new_big_image_lock())
    with worker_pool(n_workers, _init_worker, args) as pool:
        progress.start(len(items))
        progress.advance(len(items) - len(pending))
        _run(pool, pending, path, journal, finished, progress)
    result = _finish(ws, frame, done_rows, done_rejected, finished, params, inputs, path, journal)
    if resumed is not None and result.kept + result.rejected < len(frame):
        # the resumed plan predates paintings added since: cache those too
        return resize(ws, size=size, fit=fit, workers=workers, max_pixels=max_pixels, images=images, progress=progress)
    return result


def _plan(ws: Workspace, frame, done_rows, done_rejected, path: Path, journal: _Journal, size: int, fit: str,
          resumed) -> tuple[list, dict]:
    """The journal's plan when a run was killed (with what it finished), else a new one for the paintings not cached."""
    if resumed is None:
        base = cache.rows_in(path, size)
        todo = frame[~frame["image_id"].isin(done_rows.index) & ~frame["image_id"].isin(done_rejected.index)]
        items = [[i, p, base + k] for k, (i, p) in enumerate(zip(todo["image_id"], todo["path"]))]
        _check_disk(ws.cache, len(items) * cache.row_bytes(size))
        rows = base + len(items)
        journal.start(size, fit, rows, items)
        finished: dict = {}
    else:
        rows, items, finished = resumed
    # idempotent, so a run killed while growing the file grows it again
    if not path.exists() or path.stat().st_size != cache.header_length(size) + rows * cache.row_bytes(size):
        cache.ensure_rows(path, rows, size)
    return items, finished


def _run(pool, pending: list, path: Path, journal: _Journal, finished: dict, progress: Progress) -> None:
    """Resize ``pending`` in the workers; every painting is journalled once its pixels are on disk."""
    buffer: list = []
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal last_flush
        if buffer:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)  # pixels on disk before the journal says so
            finally:
                os.close(fd)
            journal.append(buffer)
            buffer.clear()
        last_flush = time.monotonic()

    def done(_: int, results: list) -> None:
        for image_id, row, reason, h, digest in results:
            finished[image_id] = (row, reason, h, digest)
        buffer.extend(results)
        if len(buffer) >= 32 or time.monotonic() - last_flush > 2.0:
            flush()
        progress.advance(len(results))

    try:
        map_chunks(pool, _resize_chunk, chunks(pending, 8), done)
    finally:
        flush()


def _previous(ws: Workspace) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paintings cached (image_id -> cache_row, phash, digest) and rejected (-> reason) by earlier runs."""
    if ws.record("resize") is None:
        return pd.DataFrame(columns=CACHED), pd.DataFrame(columns=["reason"])
    ok, _ = read_manifest(ws.manifest("resize"))
    bad, _ = read_manifest(ws.rejected("resize"))
    return ok.set_index("image_id").reindex(columns=CACHED), bad.set_index("image_id")[["reason"]]


def _finish(ws, frame, done_rows, done_rejected, finished, params, inputs, path, journal) -> StageResult:
    new = pd.DataFrame.from_dict(finished, orient="index", columns=["cache_row", "reason", "phash", "digest"])
    ok = pd.concat([done_rows, new[new["reason"].isna()][CACHED]])
    bad = pd.concat([done_rejected, new[new["reason"].notna()][["reason"]]])
    kept = frame.join(ok, on="image_id", how="inner")
    kept["cache_row"] = kept["cache_row"].astype("int64")
    kept["phash"] = kept["phash"].astype("int64")
    unknown = kept["digest"].isna().to_numpy()  # cached by a version of pbn that kept no digest: read them back
    if unknown.any():
        images = cache.open_cache(path)
        kept.loc[unknown, "digest"] = [cache.pixels_digest(images[r]) for r in kept.loc[unknown, "cache_row"]]
    kept["near_duplicate_group"] = near_duplicate_groups(kept["phash"].to_numpy())
    rejected = frame.join(bad, on="image_id", how="inner")
    summary = _near_duplicate_summary(ws, kept)
    record = Record("resize", params, inputs, extra={"cache": path.name, "summary": summary})
    write_manifest(ws.rejected("resize"), rejected.reset_index(drop=True), Record("resize.rejected", params, inputs))
    write_manifest(ws.manifest("resize"), kept.reset_index(drop=True), record)
    _write_preview(ws, kept, path)
    journal.path.unlink(missing_ok=True)
    return StageResult(False, len(kept), len(rejected), reason_counts(rejected), record, summary)


def _near_duplicate_summary(ws: Workspace, kept: pd.DataFrame) -> dict:
    grouped = kept[kept["near_duplicate_group"] >= 0]
    summary = {"near_duplicate_groups": int(grouped["near_duplicate_group"].nunique()), "near_duplicate_paintings": len(grouped)}
    summary["straddling_splits"] = straddling_groups(ws, grouped)
    return summary


def straddling_groups(ws: Workspace, grouped: pd.DataFrame) -> int | None:
    """Near-duplicate groups whose paintings sit in more than one split (None before `split`)."""
    if ws.record("split") is None:
        return None
    splits, _ = read_manifest(ws.manifest("split"))
    joined = grouped[["image_id", "near_duplicate_group"]].merge(splits[["image_id", "split"]], on="image_id")
    return int((joined.groupby("near_duplicate_group")["split"].nunique() > 1).sum())


def _write_preview(ws: Workspace, kept: pd.DataFrame, path: Path, n: int = 64, seed: int = 0) -> None:
    if kept.empty:
        return
    pick = kept.sample(min(n, len(kept)), random_state=seed).sort_values("artist")
    pixels = np.load(path, mmap_mode="r")
    sheet = contact_sheet([pixels[r] for r in pick["cache_row"]], list(pick["artist"]))
    save_png(sheet, ws.cache / "preview.png")
