"""predict: a same-artist probability for every pair of a CSV (Kaggle's submission_info.csv).

Three steps, each bounded in memory:

1. ``read_pairs`` streams the CSV (index, image1, image2, read by position)
   with pyarrow's block reader and keeps only integer codes of the distinct
   image names (8 bytes a pair plus the index column).
2. ``embed_distinct`` embeds each distinct image once: decoding in worker
   processes through the same door as resize, the network in this process.
   For a workspace run the embeddings are cached in shards under
   ``runs/<run>/predict/<checkpoint>/`` (atomic writes), so a killed or
   repeated predict embeds only what it has not seen.
3. ``pair_distances`` scores a chunk of pairs without a Python loop per pair:
   pairs are ordered by their first image, and for each tile of first images
   the dot products with their partners come from one matrix product over the
   distinct images the tile touches (Kaggle's pairs come group by group, so a
   tile touches about one group). Pairs whose images are spread too thinly for
   a product to pay fall back to gathered row-wise dot products.

The output (``index,sameArtist``, calibrated probabilities, input order) is
written to a temporary file and moved into place only when complete.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from pbn_cli import imaging, locking
from pbn_cli.atomic import atomic_path
from pbn_cli.errors import InputError, PbnError
from pbn_cli.evaluation import calibration
from pbn_cli.parallel import chunks, default_workers, map_chunks, worker_pool
from pbn_cli.paths import locate

MISSING = ("error", "fill")
FILL = 0.5
SHARD = 4096  # embeddings per cache file
CHUNK = 4_000_000  # pairs scored and written at a time

Progress = Callable[[int], None] | None


@dataclass
class Pairs:
    names: list[str]  # distinct image names, in order of first appearance
    first: np.ndarray  # int32 code of image1 per pair
    second: np.ndarray  # int32 code of image2 per pair
    index: pa.ChunkedArray  # the CSV's first column, as read (int64 when it is all integers)
    header: bool

    def __len__(self) -> int:
        return len(self.first)


def _has_header(path: Path) -> bool:
    with open(path, "rb") as f:
        line = f.readline(1 << 16)
    first = line.split(b",")[0].strip().strip(b'"')
    return not first.lstrip(b"-").isdigit()


def read_pairs(path: Path, on_start: Progress = None, on_progress: Progress = None) -> Pairs:
    """The pairs of ``path``: first three columns by position, header skipped when there is one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path} is empty; expected columns index, image1, image2")
    header = _has_header(path)
    if on_start:
        on_start(size)
    try:
        try:
            return _read_pairs(path, size, header, pa.int64(), on_progress)
        except pa.ArrowInvalid as err:
            if "column #0" not in str(err):
                raise
        return _read_pairs(path, size, header, pa.string(), None)  # the index column is text: keep it so
    except (pa.ArrowInvalid, pa.ArrowKeyError) as err:
        msg = str(err).strip().splitlines()[0].strip("'\"")
        if "Empty CSV file" in msg:
            raise InputError(f"{path} has no pairs; expected rows of index, image1, image2") from None
        if "include_columns" in msg or "column" in msg and "f2" in msg:
            raise InputError(f"{path}: needs three columns (index, image1, image2)") from None
        raise InputError(f"{path}: not a readable pairs CSV: {msg[:200]}") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason})") from None


def _read_pairs(path: Path, size: int, header: bool, index_type: pa.DataType, on_progress: Progress) -> Pairs:
    names = pa.dictionary(pa.int32(), pa.string())  # the parser builds each block's dictionary
    read = pa_csv.ReadOptions(block_size=1 << 24, autogenerate_column_names=True, skip_rows=int(header))
    convert = pa_csv.ConvertOptions(column_types={"f0": index_type, "f1": names, "f2": names},
                                    include_columns=["f0", "f1", "f2"], strings_can_be_null=False)
    codes: dict[str, int] = {}
    firsts, seconds, index = [], [], []
    done = rows = 0
    with open(path, "rb") as f:
        reader = pa_csv.open_csv(f, read_options=read, convert_options=convert)
        for batch in reader:
            index.append(batch.column(0))
            for col, out in ((batch.column(1), firsts), (batch.column(2), seconds)):
                local = col.dictionary.to_pylist()
                if any(not name for name in local):
                    empty = local.index("")
                    at = int(np.flatnonzero(col.indices.to_numpy(zero_copy_only=False) == empty)[0])
                    raise InputError(f"{path}: line {rows + at + 1 + int(header)} has an empty image name")
                to_global = np.fromiter((codes.setdefault(n, len(codes)) for n in local), np.int32, len(local))
                out.append(to_global[col.indices.to_numpy(zero_copy_only=False)])
            rows += len(batch)
            if on_progress:
                pos = min(f.tell(), size)
                on_progress(pos - done)
                done = pos
    if on_progress and size > done:
        on_progress(size - done)
    if not rows:
        raise InputError(f"{path} has no pairs; expected rows of index, image1, image2")
    idx = pa.chunked_array(index, index_type)
    return Pairs(list(codes), np.concatenate(firsts), np.concatenate(seconds), idx, header)


class PairScorer:
    """Euclidean distances between pairs of rows of one embedding matrix, without a loop per pair.

    Uses |x|^2 + |y|^2 - 2 x.y on rows centred once (so that the cancellation
    scales with the spread of the embeddings, not their distance from the
    origin). Pairs are ordered by their first image; for each tile of at most
    ``tile`` distinct first images, the dot products with their partners come
    from one matrix product over the distinct images the tile touches (at most
    ``max_entries`` products). When a tile's product would cost more than 16
    products a pair, its dots are gathered row by row instead.
    """

    def __init__(self, emb: np.ndarray, tile: int = 1024, max_entries: int = 8 << 20):
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        centre = (np.ones(len(emb), np.float32) @ emb) / max(len(emb), 1)  # any centre works; this one is cheap
        self.emb = emb - centre
        self.sq = np.einsum("ij,ij->i", self.emb, self.emb)
        self.tile, self.max_entries = tile, max_entries
        self._remap = np.empty(len(emb), np.int32)
        self._seen = np.zeros(len(emb), bool)

    def distances(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """float32 distance between rows ``a[k]`` and ``b[k]`` for every k."""
        emb, sq, tile, remap, seen = self.emb, self.sq, self.tile, self._remap, self._seen
        n = len(a)
        out = np.empty(n, np.float32)
        if n == 0:
            return out
        key = a.astype(np.uint16) if len(emb) <= 1 << 16 else a  # 16-bit keys sort by radix
        order = np.argsort(key, kind="stable")
        sa = a[order]
        starts = np.flatnonzero(np.r_[True, sa[1:] != sa[:-1]])
        for t in range(0, len(starts), tile):
            lo = starts[t]
            hi = starts[t + tile] if t + tile < len(starts) else n
            rows = order[lo:hi]
            ra, rb = sa[lo:hi], b[rows]
            tile_starts = starts[t : t + tile]
            ua = sa[tile_starts]
            seen[rb] = True
            ub = np.flatnonzero(seen)
            seen[ub] = False
            entries = len(ua) * len(ub)
            if entries <= self.max_entries and entries <= 16 * len(rows):
                inva = np.repeat(np.arange(len(ua), dtype=np.int32), np.diff(np.r_[tile_starts, hi]))
                remap[ub] = np.arange(len(ub), dtype=np.int32)
                dots = (emb[ua] @ emb[ub].T)[inva, remap[rb]]
            else:
                dots = np.empty(len(rows), np.float32)
                for s in range(0, len(rows), 8192):
                    dots[s : s + 8192] = np.einsum("ij,ij->i", emb[ra[s : s + 8192]], emb[rb[s : s + 8192]])
            out[rows] = np.sqrt(np.maximum(sq[ra] + sq[rb] - 2 * dots, 0))
        return out


def pair_distances(emb: np.ndarray, a: np.ndarray, b: np.ndarray, tile: int = 1024) -> np.ndarray:
    """Distances between rows ``emb[a[k]]`` and ``emb[b[k]]`` (see ``PairScorer``)."""
    return PairScorer(emb, tile).distances(a, b)


# ---------------------------------------------------------------- embeddings

_worker: dict = {}


def _init_worker(size: int, fit: str, lock) -> None:
    _worker.update(size=size, fit=fit)
    imaging.set_big_image_lock(lock)


def _load_chunk(items: list[tuple[int, str]]) -> tuple[list[int], np.ndarray | None, list[tuple[int, str]]]:
    """Decode (code, path) items: the codes read, their pixels, and (code, reason) for failures."""
    ok, pixels, failed = [], [], []
    for code, path in items:
        try:
            pixels.append(imaging.load_rgb(path, _worker["size"], _worker["fit"]))
            ok.append(code)
        except imaging.ImageReadError as err:
            failed.append((code, str(err)))
    return ok, (np.stack(pixels) if pixels else None), failed


def _file_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


@dataclass
class EmbedCache:
    """Embedding shards of one run and checkpoint: path, size, mtime_ns, embedding."""

    folder: Path
    identity: str  # changes when the checkpoint does

    def load(self) -> dict[tuple[str, int, int], np.ndarray]:
        found: dict[tuple[str, int, int], np.ndarray] = {}
        if not self.folder.is_dir():
            return found
        for part in sorted(self.folder.glob("part-*.parquet")):
            try:
                meta = pq.read_schema(part).metadata or {}
                if meta.get(b"pbn-identity", b"").decode() != self.identity:
                    part.unlink()  # from an older checkpoint
                    continue
                table = pq.read_table(part)
            except Exception:  # a damaged shard is only lost work: drop it
                part.unlink(missing_ok=True)
                continue
            emb = np.asarray(table.column("embedding").combine_chunks().flatten()).reshape(table.num_rows, -1)
            for p, s, m, e in zip(table.column("path").to_pylist(), table.column("size").to_pylist(),
                                  table.column("mtime_ns").to_pylist(), emb):
                found[(p, s, m)] = e
        return found

    def save(self, keys: list[tuple[str, int, int]], emb: np.ndarray) -> None:
        if not keys:
            return
        n = len(list(self.folder.glob("part-*.parquet")))
        while (self.folder / f"part-{n:06d}.parquet").exists():
            n += 1
        table = pa.table({
            "path": [k[0] for k in keys], "size": pa.array([k[1] for k in keys], pa.int64()),
            "mtime_ns": pa.array([k[2] for k in keys], pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.astype(np.float32).ravel()), emb.shape[1]),
        }).replace_schema_metadata({b"pbn-identity": self.identity.encode()})
        with atomic_path(self.folder / f"part-{n:06d}.parquet") as tmp:
            pq.write_table(table, tmp)


@dataclass
class Embedded:
    emb: np.ndarray  # (n_names, D) float32; rows of failed images are zero
    failed: dict[int, str] = field(default_factory=dict)  # code -> reason
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


def locate_all(names: list[str], root: str) -> tuple[dict[int, str], dict[int, str]]:
    """The full path of each name found inside ``root`` and the reason for each that is not, by code."""
    full: dict[int, str] = {}
    absent: dict[int, str] = {}
    for code, name in enumerate(names):
        path, reason = locate(root, name)
        if reason:
            absent[code] = reason
        else:
            full[code] = path
    return full, absent


def embed_distinct(model, n: int, full: dict[int, str], device, cache: EmbedCache | None, workers: int | None,
                   on_start: Progress = None, on_progress: Progress = None) -> Embedded:
    """Embeddings (n rows) of the files ``full`` maps codes to; unreadable ones are returned, not raised."""
    import torch

    from pbn_cli.evaluation.embed import embed_images

    t0 = time.monotonic()
    failed: dict[int, str] = {}
    keys = {}
    for code, path in full.items():
        try:
            keys[code] = (path, *_file_key(path))
        except OSError as err:
            failed[code] = f"unreadable path: {err.strerror}"
    with locking.hold(cache.folder / "lock", f"predict embeddings {cache.folder}") if cache else contextlib.nullcontext():
        known = cache.load() if cache else {}
        vectors: dict[int, np.ndarray] = {c: known[k] for c, k in keys.items() if k in known}
        todo = [(c, full[c]) for c in keys if c not in vectors]
        if on_start:
            on_start(len(keys))
        if on_progress and vectors:
            on_progress(len(vectors))
        net = model.network(device) if todo else None
        batch: list[tuple[int, np.ndarray]] = []
        unsaved: list[int] = []

        def embed_batch() -> None:
            codes = [c for c, _ in batch]
            pixels = np.concatenate([p for _, p in batch])
            with torch.inference_mode():
                z = embed_images(net, lambda idx: pixels[idx], len(pixels), model.config.model.input_size,
                                 model.config.view, model.config.model.normalize, device)
            for c, v in zip(codes, z):
                vectors[c] = v
            unsaved.extend(codes)
            batch.clear()
            if cache and len(unsaved) >= SHARD:
                cache.save([keys[c] for c in unsaved], np.stack([vectors[c] for c in unsaved]))
                unsaved.clear()

        def done(_: int, result) -> None:
            ok, pixels, bad = result
            for code, reason in bad:
                failed[code] = reason
            if ok:
                batch.extend(zip(ok, pixels[:, None]))
            if len(batch) >= 256:
                embed_batch()
            if on_progress:
                on_progress(len(ok) + len(bad))

        n_workers = workers or default_workers()
        big = mp.get_context("fork").Lock() if "fork" in mp.get_all_start_methods() else None
        try:
            with worker_pool(n_workers if len(todo) > 64 else 1, _init_worker, (model.image_size, model.fit, big)) as pool:
                map_chunks(pool, _load_chunk, chunks(todo, 16), done)
            if batch:
                embed_batch()
        finally:
            if cache and unsaved:
                cache.save([keys[c] for c in unsaved], np.stack([vectors[c] for c in unsaved]))
    dim = len(next(iter(vectors.values()))) if vectors else 1
    emb = np.zeros((n, dim), np.float32)
    for c, v in vectors.items():
        emb[c] = v
    return Embedded(emb, failed, len(todo), len(keys) - len(todo), time.monotonic() - t0)


def describe_failures(names: list[str], failed: dict[int, str], limit: int = 5) -> str:
    shown = [f"{names[c]} ({failed[c]})" for c in sorted(failed)[:limit]]
    more = f" and {len(failed) - limit} more" if len(failed) > limit else ""
    return ", ".join(shown) + more


# ------------------------------------------------------------------ scoring


@dataclass
class Prediction:
    rows: int
    images: int
    filled_images: int
    filled_pairs: int
    computed: int
    cached: int
    embed_seconds: float
    read_seconds: float
    score_seconds: float  # distances, probabilities and writing
    output: Path

    @property
    def pairs_per_second(self) -> float:
        """Pairs a second end to end apart from embedding: reading, scoring, writing."""
        return self.rows / max(self.read_seconds + self.score_seconds, 1e-9)


def write_probabilities(pairs: Pairs, emb: np.ndarray, bad: np.ndarray, platt_a: float, platt_b: float,
                        output: Path, on_progress: Progress = None) -> int:
    """Score every pair and write ``index,sameArtist`` atomically; returns pairs filled with 0.5.

    A chunk is written by a second thread while the next one is scored (both
    release the GIL), at most one chunk ahead.
    """
    filled = 0
    scorer = PairScorer(emb)
    schema = pa.schema([("index", pairs.index.type), ("sameArtist", pa.float32())])
    with atomic_path(Path(output)) as tmp, open(tmp, "wb") as f, ThreadPoolExecutor(1) as writing:
        f.write(b"index,sameArtist\n")
        with pa_csv.CSVWriter(f, schema, write_options=pa_csv.WriteOptions(include_header=False)) as writer:
            pending = None
            for start in range(0, len(pairs), CHUNK):
                stop = min(len(pairs), start + CHUNK)
                a, b = pairs.first[start:stop], pairs.second[start:stop]
                p = calibration.probability(scorer.distances(a, b), platt_a, platt_b).astype(np.float32)
                if bad.any():
                    hole = bad[a] | bad[b]
                    p[hole] = FILL
                    filled += int(hole.sum())
                table = pa.table({"index": pairs.index.slice(start, stop - start), "sameArtist": p}, schema=schema)
                if pending is not None:
                    pending.result()
                pending = writing.submit(writer.write_table, table)
                if on_progress:
                    on_progress(stop - start)
            if pending is not None:
                pending.result()
        f.flush()
    return filled


def predict(model, pairs_csv: Path, images: Path, output: Path, device, missing: str = "error",
            cache: EmbedCache | None = None, workers: int | None = None,
            bar_factory: Callable | None = None) -> Prediction:
    """Read, embed, score and write; ``bar_factory(description, unit)`` gives progress bars (context managers)."""
    if missing not in MISSING:
        raise InputError(f"--missing must be error or fill, got {missing!r}")
    if not Path(images).is_dir():
        raise InputError(f"image folder {images} does not exist")
    if Path(output).is_dir():
        raise InputError(f"{output} is a folder; give the submission file's name with -o")
    bars = bar_factory or (lambda *_: contextlib.nullcontext(None))

    def callbacks(bar):
        return (bar.start, bar.advance) if bar is not None else (None, None)

    t0 = time.monotonic()
    with bars("predict: reading pairs", "bytes") as bar:
        pairs = read_pairs(pairs_csv, *callbacks(bar))
    read_seconds = time.monotonic() - t0
    root = os.path.realpath(images)
    full, absent = locate_all(pairs.names, root)
    if absent and missing == "error":  # files that are not there: say so before any embedding
        raise InputError(
            f"{len(absent)} of the {len(pairs.names)} images in {pairs_csv} cannot be used: "
            f"{describe_failures(pairs.names, absent)}; fix --images or pass --missing fill (their pairs get 0.5)"
        )
    with bars("predict: embedding images", "images") as bar:
        embedded = embed_distinct(model, len(pairs.names), full, device, cache, workers, *callbacks(bar))
    if embedded.failed and missing == "error":
        raise InputError(
            f"{len(embedded.failed)} of the {len(pairs.names)} images in {pairs_csv} cannot be read: "
            f"{describe_failures(pairs.names, embedded.failed)}; fix them or pass --missing fill (their pairs get 0.5)"
        )
    bad = np.zeros(len(pairs.names), bool)
    bad[[*absent, *embedded.failed]] = True
    t0 = time.monotonic()
    with bars("predict: scoring pairs", "pairs") as bar:
        if bar is not None:
            bar.start(len(pairs))
        try:
            filled = write_probabilities(pairs, embedded.emb, bad, model.calibration["platt_a"],
                                         model.calibration["platt_b"], output, bar.advance if bar else None)
        except OSError as err:
            raise PbnError(f"cannot write {output}: {err.strerror}") from None
    return Prediction(len(pairs), len(pairs.names), int(bad.sum()), filled, embedded.computed, embedded.cached,
                      embedded.seconds, read_seconds, time.monotonic() - t0, Path(output))


def run_cache(ws, model, which: str) -> EmbedCache:
    """The embedding cache of a workspace run's checkpoint."""
    from pbn_cli.runs import run_for

    return EmbedCache(run_for(ws, model.name).folder / "predict" / which, model.fingerprint())
