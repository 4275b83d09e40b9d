"""Many pairs of images: read from a CSV in bounded memory, scored by matrix products, written atomically.

``read_pairs`` streams the CSV (index, image1, image2, read by position)
with pyarrow's block reader and keeps only integer codes of the distinct
image names (8 bytes a pair plus the index column). ``PairScorer`` scores a
chunk of pairs without a Python loop per pair: pairs are ordered by their
first image, and for each tile of first images the dot products with their
partners come from one matrix product over the distinct images the tile
touches (Kaggle's pairs come group by group, so a tile touches about one
group). Pairs whose images are spread too thinly for a product to pay fall
back to gathered row-wise dot products. ``write_probabilities`` writes
``index,sameArtist`` to a temporary file moved into place when complete.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from pbn_cli.core.atomic import atomic_path
from pbn_cli.core.errors import InputError
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.answers import calibration

FILL = 0.5  # the probability of a pair whose image is missing, with --missing fill
CHUNK = 4_000_000  # pairs scored and written at a time


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


def read_pairs(path: Path, progress: Progress = SILENT) -> Pairs:
    """The pairs of ``path``: first three columns by position, header skipped when there is one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path} is empty; expected columns index, image1, image2")
    header = _has_header(path)
    progress.start(size)
    try:
        try:
            return _read_pairs(path, size, header, pa.int64(), progress)
        except pa.ArrowInvalid as err:
            if "column #0" not in str(err):
                raise
        return _read_pairs(path, size, header, pa.string(), SILENT)  # the index column is text: keep it so
    except (pa.ArrowInvalid, pa.ArrowKeyError) as err:
        msg = str(err).strip().splitlines()[0].strip("'\"")
        if "Empty CSV file" in msg:
            raise InputError(f"{path} has no pairs; expected rows of index, image1, image2") from None
        if "include_columns" in msg or "column" in msg and "f2" in msg:
            raise InputError(f"{path}: needs three columns (index, image1, image2)") from None
        raise InputError(f"{path}: not a readable pairs CSV: {msg[:200]}") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason})") from None


def _read_pairs(path: Path, size: int, header: bool, index_type: pa.DataType, progress: Progress) -> Pairs:
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
            pos = min(f.tell(), size)
            progress.advance(pos - done)
            done = pos
    if size > done:
        progress.advance(size - done)
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


def write_probabilities(pairs: Pairs, emb: np.ndarray, bad: np.ndarray, platt_a: float, platt_b: float,
                        output: Path, progress: Progress = SILENT) -> int:
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
                progress.advance(stop - start)
            if pending is not None:
                pending.result()
        f.flush()
    return filled
