"""The embedding store: one model's embeddings of the workspace's paintings, each computed once.

``workspace/embeddings/<model>/`` holds chunk files ``part-NNNNNN.parquet``
(``image_id``, ``digest``, ``embedding``), each written atomically. A
painting is keyed by its id and the digest of its cached pixels: paintings
ingested later are the only ones embedded next time, a painting cached
anew with other pixels is embedded again, and paintings cleaned away are
never asked for: readers read only the rows they ask for, so stale rows
are filtered out on read, and the store's writers drop them from disk
(``prune``, run by `pbn embed`; a search never rewrites the store). A pass
killed at any moment leaves whole chunks; the next pass embeds only what
is missing, in the same chunks and batches, so the store ends exactly as
an uninterrupted pass leaves it.

This module is the one place that knows the layout: the folders' names
(``model_store``, ``pretrained_store``, ``open_store``, ``all_stores``), the
chunks' names and metadata, and a stored row's id (``Store.ids``: its
chunk's number and its row within it). What is kept beside a store and
names its rows by those ids (the vector index, inference/index.py)
implements ``StoreFollower``, and the store keeps it in step when it
rewrites its chunks.

One writer at a time: a second one waits for the first and then finds
less to do. Readers take no lock (every file appears whole). Under
torchrun each rank embeds its share of the chunks and rank 0 writes them.
``half`` stores float16 (half the disk and memory; docs/benchmarks.md says
what it costs the figures): a store of its own, ``<model>-f16``. Each chunk
names the engine that computed it (``engines()``: torch or onnx, equal
within ``engine.TOLERANCE``).
"""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pbn_cli.core import locking
from pbn_cli.core.atomic import atomic_path, read_json, write_text
from pbn_cli.core.distributed import Dist, barrier, broadcast_object, gather_object
from pbn_cli.core.errors import PbnError
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.cache import SplitRows

CHUNK = 512  # paintings a chunk file holds: the most a killed pass can lose
_HALF = "-f16"  # the name ending of a float16 store
_COPY = "copy-"  # the name beginning of the store of a run's untouched pretrained copy
_PART = re.compile(r"^part-(\d{6})\.parquet$")
_ROWS = 2**20  # rows a chunk may hold: a row's id is its chunk's number times this, plus its row


@runtime_checkable
class StoreFollower(Protocol):
    """What a follower of a store must implement: anything kept beside a store that names the store's rows by
    their ids (``Store.ids``), as the vector index does (``inference.index.StoredIndex``).

    Appending chunks never changes an id, so a follower catches up with new rows whenever it next reads the
    store. A rewrite (``Store.prune``) moves the rows it keeps into new chunks, and so to new ids, and drops the
    rest: the store then calls ``renumber``, so that the follower stays in step without being built again.
    """

    def renumber(self, old: np.ndarray, new: np.ndarray) -> None:
        """The store's row ``old[i]`` is now row ``new[i]``; a row whose id is not in ``old`` is gone."""


def model_store(ws: Workspace, key: str, half: bool = False) -> Store:
    """The store of the model whose weights ``key`` names (float16 with ``half``: a store of its own)."""
    return Store(ws.embeddings / (key + (_HALF if half else "")), half)


def pretrained_store(ws: Workspace, key: str) -> Store:
    """The store of an untouched pretrained copy whose weights and geometry ``key`` names (shared by runs)."""
    return Store(ws.embeddings / (_COPY + key))


def open_store(folder: Path) -> Store:
    """The store in ``folder``, float16 or not as its name says."""
    return Store(folder, folder.name.endswith(_HALF))


def all_stores(ws: Workspace) -> list[Store]:
    """Every embedding store of the workspace, by name."""
    folders = sorted(p for p in ws.embeddings.iterdir() if p.is_dir()) if ws.embeddings.is_dir() else []
    return [open_store(folder) for folder in folders]


def _number(chunk: str) -> int:
    """A chunk file's number, from its name."""
    return int(_PART.match(chunk).group(1))


@dataclass
class Store:
    folder: Path
    half: bool = False
    _keys: pd.DataFrame | None = field(default=None, repr=False)
    damaged: list = field(default_factory=list, repr=False)  # chunk files that could not be read

    @property
    def lock(self) -> Path:
        return self.folder / "lock"

    @property
    def about(self) -> Path:
        """store.json: what model the embeddings come from (for `pbn index status`)."""
        return self.folder / "store.json"

    def describe(self, about: dict) -> None:
        """Record what the embeddings come from, once."""
        if not self.about.exists():
            write_text(self.about, json.dumps({**about, "half": self.half}, indent=2))

    def description(self) -> dict:
        return read_json(self.about, f"delete {self.folder} and embed again") or {}

    def engines(self) -> dict[str, int]:
        """How many stored chunks each engine computed (chunks written before engines were recorded: torch)."""
        count: dict[str, int] = {}
        for path in self.chunks():
            try:
                meta = json.loads((pq.read_schema(path).metadata or {}).get(b"pbn-store", b"{}"))
            except (OSError, pa.ArrowException, ValueError):
                continue
            count[meta.get("engine", "torch")] = count.get(meta.get("engine", "torch"), 0) + 1
        return count

    def chunks(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("part-*.parquet") if _PART.match(p.name)) if self.folder.is_dir() else []

    def size(self) -> int:
        """Bytes the chunks take on disk."""
        return sum(p.stat().st_size for p in self.chunks())

    # -- reading -------------------------------------------------------------------------------------------------
    def keys(self) -> pd.DataFrame:
        """Every stored row: image_id, digest, the chunk file and the row within it (the first copy of a key wins)."""
        if self._keys is None:
            parts, self.damaged = [], []
            for path, table in zip(self.chunks(), _read_all(self.chunks(), ["image_id", "digest"])):
                if table is None:  # a damaged chunk is only lost work: its paintings count as missing
                    self.damaged.append(path)
                    continue
                part = table.to_pandas()
                part["chunk"], part["row"] = path.name, np.arange(len(part))
                parts.append(part)
            keys = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["image_id", "digest", "chunk", "row"])
            self._keys = keys.drop_duplicates(["image_id", "digest"], keep="first").reset_index(drop=True)
        return self._keys

    def where(self, rows: SplitRows) -> pd.DataFrame:
        """For each of ``rows``: its chunk and row in the store (NaN where it is not stored)."""
        return self.where_keys(rows.image_ids, rows.digests)

    def where_keys(self, image_ids: np.ndarray, digests: np.ndarray) -> pd.DataFrame:
        asked = pd.DataFrame({"image_id": np.asarray(image_ids).astype(str), "digest": np.asarray(digests).astype(str)})
        return asked.merge(self.keys(), on=["image_id", "digest"], how="left")

    def missing(self, rows: SplitRows) -> np.ndarray:
        """A mask of the ``rows`` not stored yet."""
        return self.where(rows)["chunk"].isna().to_numpy()

    def stale(self, alive: SplitRows) -> np.ndarray:
        """A mask of the stored rows (``keys()``) not among ``alive``: paintings gone, or cached anew since."""
        asked = pd.MultiIndex.from_arrays([alive.image_ids.astype(str), alive.digests.astype(str)])
        return ~self.keys().set_index(["image_id", "digest"]).index.isin(asked)

    def ids(self, image_ids: np.ndarray, digests: np.ndarray) -> np.ndarray:
        """Each asked painting's stored row as one int64 id (-1 where it is not stored): its chunk's number times
        2**20, plus its row within the chunk. Appending chunks never changes an id; a rewrite (``prune``) does, and
        tells the store's followers (``StoreFollower``)."""
        at = self.where_keys(image_ids, digests)
        stored = at["chunk"].notna().to_numpy()
        out = np.full(len(at), -1, np.int64)
        numbers = at.loc[stored, "chunk"].map(_number).to_numpy(np.int64)
        out[stored] = numbers * _ROWS + at.loc[stored, "row"].to_numpy(np.int64)
        return out

    def read(self, rows: SplitRows) -> np.ndarray:
        """The stored embeddings of ``rows``, in their order, as float32 (n, D); memory: the result and one chunk."""
        at = self.where(rows)
        if at["chunk"].isna().any():
            first = rows.image_ids[at["chunk"].isna().to_numpy()][0]
            raise PbnError(f"painting {first} is not in the embedding store {self.folder}")
        out = None
        names = sorted(at["chunk"].unique())
        for name, table in zip(names, _read_all([self.folder / n for n in names], ["embedding"])):
            if table is None:
                raise PbnError(f"{self.folder / name} was damaged while being read; run the command again")
            emb = _to_numpy(table.column("embedding"), self.half)
            if out is None:
                out = np.empty((len(rows), emb.shape[1]), np.float32)
            here = (at["chunk"] == name).to_numpy()
            out[here] = emb[at.loc[here, "row"].to_numpy(np.int64)]
        return out if out is not None else np.zeros((0, 0), np.float32)

    # -- writing -------------------------------------------------------------------------------------------------
    def write(self, rows: SplitRows, emb: np.ndarray, engine: str = "torch") -> None:
        """One chunk file with ``rows``' embeddings computed by ``engine`` (under the store's lock)."""
        if len(rows) > _ROWS:
            raise PbnError(f"a chunk of the embedding store holds at most {_ROWS:,} paintings, not {len(rows):,}")
        numbers = [_number(p.name) for p in self.chunks()]
        path = self.folder / f"part-{max(numbers, default=-1) + 1:06d}.parquet"
        values = np.ascontiguousarray(emb, np.float16 if self.half else np.float32)
        width = values.shape[1] * values.itemsize
        table = pa.table({
            "image_id": pa.array(rows.image_ids.astype(str)), "digest": pa.array(rows.digests.astype(str)),
            # each row's vector as raw bytes: Parquet has no 16-bit numbers, and bytes read back without copying
            "embedding": pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values),
                                                              [None, pa.py_buffer(values.tobytes())]),
        }).replace_schema_metadata({b"pbn-store": json.dumps({"dtype": str(values.dtype), "dim": values.shape[1],
                                                             "engine": engine})})
        with atomic_path(path) as tmp:  # numbers compress poorly: stored plain, for fast reading
            pq.write_table(table, tmp, use_dictionary=["image_id", "digest"], compression="none")
        self._keys = None

    def fill(self, rows: SplitRows, compute: Callable[[SplitRows], np.ndarray], *, chunk: int = CHUNK,
             dist: Dist = Dist(), progress: Progress = SILENT, description: str = "the network",
             engine: str = "torch") -> int:
        """Embed and store those of ``rows`` that are missing, ``chunk`` paintings a file; how many were embedded.

        ``compute`` maps paintings to their float32 embeddings. Chunks are cut
        from the missing paintings in cache order, so a resumed pass cuts the
        chunks an uninterrupted one would have. Under torchrun every rank
        calls this; rank r embeds chunks r, r + world, ... and rank 0 writes.
        A store that holds every one of ``rows`` is left untouched, its lock
        included.
        """
        rows = rows[np.argsort(rows.rows, kind="stable")]
        if dist.primary:
            self._keys = None
        if broadcast_object(dist, not (self.missing(rows).any() or self.damaged) if dist.primary else None):
            return 0
        lock = locking.hold(self.lock, f"embedding store {self.folder}", wait=True) if dist.primary else nullcontext()
        with lock:
            if dist.primary:
                self._keys = None
                self.keys()
                for path in self.damaged:  # embedded again below
                    path.unlink(missing_ok=True)
            todo = broadcast_object(dist, np.flatnonzero(self.missing(rows)) if dist.primary else None)
            todo = rows[todo]
            plan = [todo[i : i + chunk] for i in range(0, len(todo), chunk)]
            if dist.primary and plan:
                progress.message(f"embedding {len(todo):,} of {len(rows):,} paintings with {description} "
                                 f"({len(rows) - len(todo):,} stored already)")
                progress.start(len(todo), description=f"embedding with {description}", unit="paintings")
            for first in range(0, len(plan), dist.world):
                mine = plan[first + dist.rank] if first + dist.rank < len(plan) else None
                done = gather_object(dist, None if mine is None else compute(mine))
                if dist.primary:
                    for part, emb in zip(plan[first : first + dist.world], done):
                        self.write(part, emb, engine)
                        progress.advance(len(part))
        barrier(dist)  # every rank reads the store only once rank 0 has written it all
        self._keys = None
        return len(todo)

    def prune(self, alive: SplitRows, followers: Iterable[StoreFollower] = ()) -> int:
        """Rewrite the store without the rows not in ``alive`` when they are most of it, and tell ``followers``
        where the kept rows went; how many rows were dropped.

        For the store's writers (`pbn embed`), never its readers: a search filters stale rows out on read and
        leaves the store as it is. A kill at any moment leaves a whole store: before the old chunks are gone each
        kept row is stored twice and readers take the first copy; a follower that was not told finds its ids
        gone and is built anew.
        """
        with locking.hold(self.lock, f"embedding store {self.folder}", wait=True):
            self._keys = None
            dead = self.stale(alive)
            old = self.chunks()
            if len(old) < 2 or dead.sum() * 2 <= len(dead):
                return 0
            engine = "+".join(sorted(self.engines())) or "torch"
            kept = alive[~self.missing(alive)]
            before = self.ids(kept.image_ids, kept.digests)
            emb = self.read(kept)
            for start in range(0, len(kept), CHUNK):
                self.write(kept[start : start + CHUNK], emb[start : start + CHUNK], engine)
            for path in old:
                path.unlink()
            self._keys = None
            after = self.ids(kept.image_ids, kept.digests)
            for follower in followers:
                follower.renumber(before, after)
        return int(dead.sum())


def _read_all(paths: list[Path], columns: list[str]):
    """The tables of ``paths`` in order (None for a damaged one), a few at a time by threads (memory holds a few)."""
    def read(path: Path) -> pa.Table | None:
        try:
            return pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException):
            return None

    with ThreadPoolExecutor(4) as pool:
        for start in range(0, len(paths), 8):
            yield from pool.map(read, paths[start : start + 8])


def _to_numpy(column: pa.ChunkedArray, half: bool) -> np.ndarray:
    """A chunk's embedding column (raw bytes per row) as float32 (n, D)."""
    flat = column.combine_chunks()
    dtype = np.dtype(np.float16 if half else np.float32)
    width = flat.type.byte_width
    data = np.frombuffer(flat.buffers()[1], np.uint8)[flat.offset * width : (flat.offset + len(flat)) * width]
    return data.view(dtype).reshape(len(flat), width // dtype.itemsize).astype(np.float32, copy=False)


def read_chunk(path: Path) -> tuple[list, list, np.ndarray]:
    """One chunk file whole: ids, digests and float32 embeddings (for checks and tools)."""
    table = pq.read_table(path)
    dtype = json.loads(table.schema.metadata[b"pbn-store"])["dtype"]
    emb = _to_numpy(table.column("embedding"), dtype == "float16")
    return table.column("image_id").to_pylist(), table.column("digest").to_pylist(), emb
