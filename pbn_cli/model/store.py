"""The embedding store: one model's embeddings of the workspace's paintings, each computed once.

``workspace/embeddings/<model>/`` holds chunk files ``part-NNNNNN.parquet``
(``image_id``, ``digest``, ``embedding``), each written atomically. A
painting is keyed by its id and the digest of its cached pixels: paintings
ingested later are the only ones embedded next time, a painting cached
anew with other pixels is embedded again, and paintings cleaned away are
never asked for (``prune`` drops them from disk). A pass killed at any
moment leaves whole chunks; the next pass embeds only what is missing, in
the same chunks and batches, so the store ends exactly as an uninterrupted
pass leaves it.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

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
HALF = "-f16"  # the name ending of a float16 store
_PART = re.compile(r"^part-(\d{6})\.parquet$")


def model_store(ws: Workspace, key: str, half: bool = False) -> Store:
    """The store of the model whose weights ``key`` names (float16 with ``half``: a store of its own)."""
    return Store(ws.embeddings / (key + (HALF if half else "")), half)


def open_store(folder: Path) -> Store:
    """The store in ``folder``, float16 or not as its name says."""
    return Store(folder, folder.name.endswith(HALF))


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
        numbers = [int(_PART.match(p.name).group(1)) for p in self.chunks()]
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
        """
        rows = rows[np.argsort(rows.rows, kind="stable")]
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

    def prune(self, alive: SplitRows) -> int:
        """Rewrite the store without the paintings not in ``alive`` when they are most of it; rows dropped."""
        keys = self.keys()
        dead = ~keys.set_index(["image_id", "digest"]).index.isin(
            pd.MultiIndex.from_arrays([alive.image_ids.astype(str), alive.digests.astype(str)]))
        if len(self.chunks()) < 2 or dead.sum() * 2 <= len(keys):
            return 0
        engine = "+".join(sorted(self.engines())) or "torch"
        with locking.hold(self.lock, f"embedding store {self.folder}", wait=True):
            old = self.chunks()
            kept = alive[~self.missing(alive)]
            emb = self.read(kept)
            for start in range(0, len(kept), CHUNK):
                self.write(kept[start : start + CHUNK], emb[start : start + CHUNK], engine)
            for path in old:  # a kill before this line leaves each key twice: readers take the first
                path.unlink()
            self._keys = None
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
