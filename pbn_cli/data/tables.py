"""Tables with the images inside: Parquet as Hugging Face ``datasets`` writes it.

A table is one ``.parquet`` file or a folder of shards (``train-00000-of-00004.parquet``...),
all with the same columns. The image column holds ``{bytes, path}`` structs (the
``Image`` feature) or plain bytes; the artist column holds text, or integers
whose names sit in the file's schema metadata (key ``huggingface``: JSON with
``info.features.<column>.names``, a ``ClassLabel``). Every ClassLabel column
is read as its names.

Reading goes by batches of rows, so a table larger than memory streams
through: ``read_columns`` reads every column but the images;
``image_batches`` reads the images a few dozen at a time and
``extract_batch`` (run in worker processes) writes them into an image
folder, named by the sha256 of their bytes (``ab/ab12....jpg``). A row with
a path and no bytes (``datasets`` writes such rows for images it left on
disk) is read from that file, under a CSV's path rules: relative to the
table's folder (or ``--images``), never outside it. Identical
images are stored once, each file is written atomically, and a file already
there is not written again, so a killed extraction resumes where it stopped.
The batches are fed from one reader rather than one row group per worker
because ``datasets`` puts up to 100 MB in a row group: a table of small
images is often a single row group.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pbn_cli.core.atomic import atomic_path
from pbn_cli.data.paths import locate
from pbn_cli.core.errors import InputError, PbnError, listed
from pbn_cli.core.manifest import file_digest
from pbn_cli.core.parallel import default_workers
from pbn_cli.data.imaging import Header, ImageReadError, read_header

IMAGE_GUESSES = ("image", "img", "picture", "painting", "photo")
ARTIST_GUESSES = ("artist", "painter", "author", "artist_name", "creator", "label")
#: images read and handed to a worker at once (bounds the memory in flight)
IMAGE_BATCH_ROWS = 64
#: threads a worker writes a batch with: each file is fsync'd, and concurrent fsyncs share the
#: file system's journal commits (on a busy disk, 16 threads wrote 8x faster than one)
WRITE_THREADS = 16

_MAGIC = (
    (b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"),
    (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"), (b"BM", ".bmp"),
)
_FORMAT_EXT = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "TIFF": ".tif", "BMP": ".bmp",
               "WEBP": ".webp", "JPEG2000": ".jp2"}


@dataclass
class TableSource:
    """The shards of a table and the columns that matter named."""

    path: Path
    shards: list[Path]
    names: list[str]  # each shard's name in image ids: its file name
    columns: list[str]  # every column, in the table's order
    image_column: str
    artist_column: str
    labels: dict[str, list[str]] = field(default_factory=dict)  # ClassLabel column -> its names
    rows: int = 0
    fingerprint: str = ""
    skipped: list[str] = field(default_factory=list)  # further image-like columns, not carried along

    @property
    def other_columns(self) -> list[str]:
        """The columns read as table data: all but the image column and other image-like columns."""
        return [c for c in self.columns if c != self.image_column and c not in self.skipped]


def is_table(path: Path) -> bool:
    """Whether ``path`` is a Parquet file or a folder holding ``*.parquet`` files."""
    path = Path(path)
    if path.is_dir():
        return bool(_shards_in(path))
    return path.suffix.lower() == ".parquet"


def _shards_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".parquet" and not p.name.startswith(".")
                  and p.is_file())


def _features(schema: pa.Schema) -> dict:
    """The Hugging Face features recorded in a schema's metadata ({} when none)."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return {}
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return features if isinstance(features, dict) else {}


def _binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _image_like(t: pa.DataType) -> bool:
    """A ``{bytes, path}`` struct (the Image feature) or plain bytes."""
    if pa.types.is_struct(t):
        return any(t.field(i).name == "bytes" and _binary(t.field(i).type) for i in range(t.num_fields))
    return _binary(t)


def _pick_image(schema: pa.Schema, features: dict, wanted: str | None, where: str) -> str:
    names = schema.names
    if wanted:
        if wanted not in names:
            raise InputError(f"{where} has no column {wanted!r} (it has: {listed(names)})")
        if not _image_like(schema.field(wanted).type):
            raise InputError(f"{where}: column {wanted!r} holds {schema.field(wanted).type}, not images "
                             "(an Image feature, a {bytes, path} struct or bytes)")
        return wanted
    typed = [c for c in names if (features.get(c) or {}).get("_type") == "Image" and _image_like(schema.field(c).type)]
    like = [c for c in names if _image_like(schema.field(c).type)]
    named = [c for c in like if c.strip().lower() in IMAGE_GUESSES]
    for candidates in (typed, named, like):
        if candidates:
            return candidates[0]
    raise InputError(f"{where} has no image column (an Image feature, a {{bytes, path}} struct or bytes; "
                     f"it has: {listed(names)}); name it with --image-column")


def _pick_artist(names: list[str], wanted: str | None, image_column: str, where: str) -> str:
    if wanted:
        if wanted not in names:
            raise InputError(f"{where} has no column {wanted!r} (it has: {listed(names)})")
        return wanted
    lower = {c.strip().lower(): c for c in names if c != image_column}
    for guess in ARTIST_GUESSES:
        if guess in lower:
            return lower[guess]
    raise InputError(f"{where} has no artist column (looked for {', '.join(ARTIST_GUESSES)}; it has: "
                     f"{listed(names)}); name it with --artist-column")


def _fingerprint(shards: list[Path]) -> str:
    """Each shard's name and the sha256 of its bytes (the shards on all cores): new bytes or a new name change it,
    a new modification time alone (a touched shard, one restored from a backup) does not. sha256 rather than
    blake2b: where the processor has SHA instructions it hashes twice as fast (1.5 against 0.8 GB/s a core)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(len(shards), default_workers())) as threads:  # hashing and reading release the GIL
        digests = list(threads.map(file_digest, shards))
    h = hashlib.sha256()
    for p, digest in zip(shards, digests):
        h.update(f"{p.name}\0{digest}\n".encode())
    return h.hexdigest()[:16]


def _schema(shard: Path) -> pa.Schema:
    try:
        return pq.read_schema(shard)
    except (pa.ArrowException, OSError) as err:
        raise InputError(f"{shard} is not a readable Parquet file ({str(err)[:160]})") from None


def open_tables(path: Path, *, image_column: str | None = None, artist_column: str | None = None) -> TableSource:
    """The table at ``path`` (a file or a folder of shards), its columns checked and chosen."""
    path = Path(path).resolve()
    if path.is_dir():
        shards = _shards_in(path)
        if not shards:
            raise InputError(f"{path} holds no .parquet files")
    elif path.is_file():
        shards = [path]
    else:
        raise InputError(f"table {path} does not exist")
    schema = _schema(shards[0])
    for shard in shards[1:]:
        other = _schema(shard)
        if other.names != schema.names:
            raise InputError(f"the shards differ: {shards[0].name} has columns {', '.join(schema.names)} but "
                             f"{shard.name} has {', '.join(other.names)}")
    where = f"the table {path.name}"
    features = _features(schema)
    columns = [c for c in schema.names if not c.startswith("__index_level_")]
    icol = _pick_image(schema, features, image_column, where)
    acol = _pick_artist(columns, artist_column, icol, where)
    if acol == icol:
        raise InputError(f"--artist-column {acol!r} is the image column")
    skipped = [c for c in columns if c not in (icol, acol) and _image_like(schema.field(c).type)]
    rows = sum(pq.read_metadata(s).num_rows for s in shards)
    labels = {c: list(f["names"]) for c, f in features.items()
              if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list)
              and c in columns and pa.types.is_integer(schema.field(c).type)}
    return TableSource(path, shards, [s.name for s in shards], columns, icol, acol, labels, rows,
                       _fingerprint(shards), skipped)


def _label_names(values: pd.Series, names: list[str]) -> pd.Series:
    """ClassLabel integers as their names; -1, null or out of range: None."""
    out = []
    for v in values:
        k = None if pd.isna(v) else int(v)
        out.append(names[k] if k is not None and 0 <= k < len(names) else None)
    return pd.Series(out, index=values.index, dtype=object)


def read_columns(source: TableSource, batch_rows: int = 65_536) -> pd.DataFrame:
    """Every column but the images, shard after shard, with ``_pbn_shard`` and ``_pbn_row`` (its row in the shard)."""
    columns = source.other_columns
    parts = []
    for k, shard in enumerate(source.shards):
        start = 0
        with pq.ParquetFile(shard) as pf:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                frame = pa.Table.from_batches([batch]).to_pandas()
                for col, names in source.labels.items():
                    frame[col] = _label_names(frame[col], names)
                frame["_pbn_shard"] = k
                frame["_pbn_row"] = range(start, start + len(frame))
                start += len(frame)
                parts.append(frame)
    if not parts:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in [*columns, "_pbn_shard", "_pbn_row"]})
    return pd.concat(parts, ignore_index=True)


def image_extension(data: bytes) -> str | None:
    """The file extension for the image in ``data`` from its first bytes, None when Pillow knows no such image."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or ""
    except Image.DecompressionBombError:
        return ".img"  # an image past Pillow's limit; its header is read from the file
    except Exception:  # Pillow raises many kinds for what is not an image
        return None
    if fmt in _FORMAT_EXT:
        return _FORMAT_EXT[fmt]
    Image.init()
    exts = sorted(e for e, f in Image.registered_extensions().items() if f == fmt)
    return exts[0] if exts else ".img"


def store_image(root: str, data: bytes) -> tuple[str, Header]:
    """Write ``data`` under ``root`` named by its sha256 (unless already there); its relative path and header.

    ``ImageReadError`` when ``data`` is not an image: nothing is left behind.
    """
    if not data:
        raise ImageReadError("empty file (0 bytes)")
    ext = image_extension(data)
    if ext is None:
        raise ImageReadError("not an image: cannot identify image file")
    digest = hashlib.sha256(data).hexdigest()
    rel = f"{digest[:2]}/{digest}{ext}"
    full = os.path.join(root, rel)
    try:
        if os.path.getsize(full) == len(data):
            return rel, read_header(full, len(data))
    except (FileNotFoundError, ImageReadError):
        pass  # not there yet (or damaged): write it
    with atomic_path(Path(full)) as tmp:
        tmp.write_bytes(data)
        header = read_header(str(tmp), len(data))  # raising here removes the temp file, writes nothing
    return rel, header


def _image_values(column: pa.Array) -> tuple[list, list]:
    """(bytes or None, the image's own path or None) for each row of an image column."""
    if not pa.types.is_struct(column.type):
        return column.to_pylist(), [None] * len(column)
    children = dict(zip([column.type.field(i).name for i in range(column.type.num_fields)], column.flatten()))
    paths = children["path"].to_pylist() if "path" in children else [None] * len(column)
    return children["bytes"].to_pylist(), paths


def _store_or_reason(root: str, data: bytes) -> tuple[str, Header] | str:
    """``store_image``'s answer, or why ``data`` is no image."""
    try:
        return store_image(root, data)
    except ImageReadError as err:
        return str(err)
    except OSError as err:
        raise PbnError(f"cannot write images into {root}: {err.strerror or err}") from None


def _from_path(base: str, name: str) -> bytes | str:
    """The bytes of the file a row names, under a CSV's path rules (inside ``base``, already real); or why not."""
    rel = name
    if os.path.isabs(name):
        real = os.path.realpath(name)
        if not real.startswith(base.rstrip(os.sep) + os.sep):
            return f"path escapes the image folder: absolute path outside {base} (point --images to a folder above it)"
        rel = os.path.relpath(real, base)
    full, reason = locate(base, rel)
    if reason:
        return reason
    try:
        with open(full, "rb") as f:
            return f.read()
    except OSError as err:
        return f"unreadable path: {err.strerror}"


def _row(data: bytes | None, name: str | None, stored) -> tuple:
    if data is None:
        return (name, None, None, None, None, None, None, "no image in the table")
    if isinstance(stored, str):
        return (name, None, None, None, None, None, None, stored)
    rel, h = stored
    return (name, rel, h.format, h.width, h.height, h.mode, len(data), None)


def image_batches(source: TableSource, rows: int = IMAGE_BATCH_ROWS) -> Iterator[tuple[list, list]]:
    """(bytes or None, the image's own path or None) for ``rows`` rows at a time, shard after shard, in row order.

    One batch is read at a time (and one row group's column chunk, which
    ``datasets`` keeps near 100 MB), so a table larger than memory streams through.
    """
    for shard in source.shards:
        with pq.ParquetFile(shard) as pf:
            for batch in pf.iter_batches(batch_size=rows, columns=[source.image_column]):
                yield _image_values(batch.column(0))


def extract_batch(args: tuple[str, list, list, str]) -> list[tuple]:
    """A batch of images into the image folder ``root`` (on ``WRITE_THREADS`` threads), per row:
    (own path, path, format, width, height, mode, bytes, reason). A row with only a path is read from the file it
    names, inside ``base`` (the table's folder or --images, real).

    Identical images of a batch are written once (two threads must not write one file).
    """
    root, datas, names, base = args
    datas, read = list(datas), {}
    for k, (data, name) in enumerate(zip(datas, names)):
        if data is None and name:
            found = _from_path(base, name)
            if isinstance(found, str):
                read[k] = found
            else:
                datas[k] = found
    unique = list(dict.fromkeys(d for d in datas if d is not None))
    if len(unique) < 2:
        stored = {d: _store_or_reason(root, d) for d in unique}
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(WRITE_THREADS, len(unique))) as threads:
            stored = dict(zip(unique, threads.map(_store_or_reason, [root] * len(unique), unique)))
    return [(name, None, None, None, None, None, None, read[k]) if k in read else
            _row(d, name, stored.get(d) if d is not None else None) for k, (d, name) in enumerate(zip(datas, names))]


def sweep_temporary(root: Path) -> None:
    """Remove the temp files a killed extraction left (``.<name>.tmp-<pid>``)."""
    if not Path(root).is_dir():
        return
    for tmp in Path(root).glob("*/.*.tmp-*"):
        tmp.unlink(missing_ok=True)
