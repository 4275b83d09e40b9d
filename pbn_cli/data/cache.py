"""The image cache: one ``.npy`` file of (N, size, size, 3) uint8 rows, and its rows per split.

``np.load(path, mmap_mode="r")`` opens it. Rows are only ever appended:
growing the cache rewrites the header's row count in place (NumPy leaves
room in the header for the first axis to grow) and extends the file, so
rows already there never move or change.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pbn_cli.core.errors import PbnError
from pbn_cli.core.manifest import read_manifest
from pbn_cli.core.workspace import Workspace


def cache_path(cache_dir: Path, size: int) -> Path:
    return Path(cache_dir) / f"images_{size}.npy"


def _header(rows: int, size: int) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": (rows, size, size, 3)}
    )
    return buf.getvalue()


def pixels_digest(pixels: np.ndarray) -> str:
    """A 16-hex digest of one cached painting's pixels: what an embedding of it depends on (model/store.py)."""
    return hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=8).hexdigest()


def row_bytes(size: int) -> int:
    return size * size * 3


def header_length(size: int) -> int:
    return len(_header(0, size))


def rows_in(path: Path, size: int) -> int:
    """How many rows the cache file at ``path`` declares (0 when it does not exist)."""
    if not path.exists():
        return 0
    try:
        return np.load(path, mmap_mode="r").shape[0]
    except Exception as err:
        raise PbnError(f"{path} is damaged ({err}); rebuild it with `pbn resize --force`") from None


def ensure_rows(path: Path, rows: int, size: int) -> None:
    """Make the cache file hold exactly ``rows`` rows; new rows read as zeros until written."""
    head = _header(rows, size)
    if len(head) != header_length(size):
        raise PbnError(f"cannot grow {path} to {rows} rows in place")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, len(head) + rows * row_bytes(size))
        os.pwrite(fd, head, 0)
        os.fsync(fd)
    finally:
        os.close(fd)


def open_cache(path: Path) -> np.ndarray:
    """The cache as a read-only memory map."""
    if not path.exists():
        raise PbnError(f"no image cache at {path}; run `pbn resize` first")
    try:
        return np.load(path, mmap_mode="r")
    except Exception as err:
        raise PbnError(f"{path} is damaged ({err}); rebuild it with `pbn resize --force`") from None


def problem(path: Path) -> str | None:
    """Why the cache at ``path`` cannot be used (missing, truncated, not a cache), or None."""
    try:
        images = open_cache(path)
    except PbnError as err:
        return str(err)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        return f"{path} is not an image cache; rebuild it with `pbn resize --force`"
    return None


@dataclass
class SplitRows:
    """Paintings of the cache (one split's, or any selection): their cache rows, artist codes, ids and digests."""

    rows: np.ndarray
    labels: np.ndarray
    image_ids: np.ndarray
    artists: np.ndarray
    digests: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, pick) -> SplitRows:
        return SplitRows(self.rows[pick], self.labels[pick], self.image_ids[pick], self.artists[pick], self.digests[pick])


class CacheData:
    """The cache and the rows of each split (split joined with resize on image_id)."""

    def __init__(self, ws: Workspace):
        split_record = ws.require("split")
        resize_record = ws.require("resize")
        splits, _ = read_manifest(ws.manifest("split"))
        cached, _ = read_manifest(ws.manifest("resize"))
        self.size = int(resize_record.params["size"])
        self.fit = resize_record.params.get("fit", "crop")
        self.path = cache_path(ws.cache, self.size)
        self.images = open_cache(self.path)
        if "digest" not in cached:  # a cache made before pbn kept its rows' digests
            cached["digest"] = [pixels_digest(self.images[r]) for r in cached["cache_row"]]
        table = splits.merge(cached[["image_id", "cache_row", "digest", *(["phash"] if "phash" in cached else [])]],
                             on="image_id")
        self.table = table
        names = sorted(table["artist"].unique())
        self.artist_codes = {a: i for i, a in enumerate(names)}
        self.fingerprints = {"split": split_record.fingerprint, "resize": resize_record.fingerprint}

    def split(self, name: str) -> SplitRows:
        """The paintings of split ``name`` (train, val, calib, test); ``all`` for every painting."""
        return self.select(self.table if name == "all" else self.table[self.table["split"] == name])

    def select(self, t) -> SplitRows:
        """The paintings of ``t``, rows of ``table``."""
        return SplitRows(
            t["cache_row"].to_numpy(np.int64),
            t["artist"].map(self.artist_codes).to_numpy(np.int64),
            t["image_id"].to_numpy(object),
            t["artist"].to_numpy(object),
            t["digest"].to_numpy(object),
        )

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """The uint8 images of ``rows`` (N, S, S, 3), read in ascending order from the memmap."""
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), self.size, self.size, 3), dtype=np.uint8)
        out[order] = self.images[rows[order]]
        return out
