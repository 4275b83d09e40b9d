"""predict: a same-artist probability for every pair of a CSV (Kaggle's submission_info.csv).

Three steps, each bounded in memory: ``pairs.read_pairs`` reads the CSV;
``embed_distinct`` embeds each distinct image once (decoding in worker
processes through the same door as resize, the network in this process;
for a workspace run the embeddings are cached in shards in the run's predict
cache, keyed by the weights' fingerprint, so a killed or repeated predict
embeds only what it has not seen); ``pairs.write_probabilities`` scores and
writes. One predict at a time writes a given output file.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pbn_cli.core import locking
from pbn_cli.core.atomic import atomic_path
from pbn_cli.core.errors import InputError, PbnError
from pbn_cli.core.parallel import chunks, default_workers, map_chunks, worker_pool
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.runs import run_for
from pbn_cli.data import imaging
from pbn_cli.data.paths import locate
from pbn_cli.inference.pairs import read_pairs, write_probabilities

MISSING = ("error", "fill")
SHARD = 4096  # embeddings per cache file


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
                   progress: Progress = SILENT) -> Embedded:
    """Embeddings (n rows) of the files ``full`` maps codes to (with the model's engine); unreadable ones are
    returned, not raised."""
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
        progress.start(len(keys))
        progress.advance(len(vectors))
        net = model.network(device) if todo and model.runtime is None else None
        batch: list[tuple[int, np.ndarray]] = []
        unsaved: list[int] = []

        def embed_batch() -> None:
            codes = [c for c, _ in batch]
            pixels = np.concatenate([p for _, p in batch])
            if net is None:
                z = model.runtime.embed(pixels)
            else:
                from pbn_cli.networks.embed import embed_images

                z = embed_images(net, lambda idx: pixels[idx], len(pixels), device)
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
            progress.advance(len(ok) + len(bad))

        n_workers = workers or default_workers()
        big = imaging.new_big_image_lock()
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


def _output_lock(output: Path) -> Path:
    """The lock beside the submission file that makes a second predict into it refuse at once."""
    output = Path(output)
    return output.parent / f".{output.name}.lock"


def predict(model, pairs_csv: Path, images: Path, output: Path, *, device, missing: str = "error",
            cache: EmbedCache | None = None, workers: int | None = None, progress: Progress = SILENT) -> Prediction:
    """Read, embed, score and write ``output`` (refused while another predict writes it)."""
    if missing not in MISSING:
        raise InputError(f"--missing must be error or fill, got {missing!r}")
    if not Path(images).is_dir():
        raise InputError(f"image folder {images} does not exist")
    if Path(output).is_dir():
        raise InputError(f"{output} is a folder; give the submission file's name with -o")
    if not Path(output).parent.is_dir():
        raise InputError(f"cannot write {output}: its folder does not exist")
    with locking.hold(_output_lock(output), f"{output}"):
        t0 = time.monotonic()
        progress.start(0, "predict: reading pairs", "bytes")
        pairs = read_pairs(pairs_csv, progress)
        read_seconds = time.monotonic() - t0
        root = os.path.realpath(images)
        full, absent = locate_all(pairs.names, root)
        if absent and missing == "error":  # files that are not there: say so before any embedding
            raise InputError(
                f"{len(absent)} of the {len(pairs.names)} images in {pairs_csv} cannot be used: "
                f"{describe_failures(pairs.names, absent)}; fix --images or pass --missing fill (their pairs get 0.5)"
            )
        progress.start(0, "predict: embedding images", "images")
        embedded = embed_distinct(model, len(pairs.names), full, device, cache, workers, progress)
        if embedded.failed and missing == "error":
            raise InputError(
                f"{len(embedded.failed)} of the {len(pairs.names)} images in {pairs_csv} cannot be read: "
                f"{describe_failures(pairs.names, embedded.failed)}; fix them or pass --missing fill (their pairs get 0.5)"
            )
        bad = np.zeros(len(pairs.names), bool)
        bad[[*absent, *embedded.failed]] = True
        t0 = time.monotonic()
        progress.start(len(pairs), "predict: scoring pairs", "pairs")
        try:
            filled = write_probabilities(pairs, embedded.emb, bad, model.calibration["platt_a"],
                                         model.calibration["platt_b"], output, progress)
        except OSError as err:
            raise PbnError(f"cannot write {output}: {err.strerror}") from None
    return Prediction(len(pairs), len(pairs.names), int(bad.sum()), filled, embedded.computed, embedded.cached,
                      embedded.seconds, read_seconds, time.monotonic() - t0, Path(output))


def run_cache(ws, model) -> EmbedCache:
    """The embedding cache of a workspace run's checkpoint, keyed by the weights' fingerprint."""
    return EmbedCache(run_for(ws, model.name).predict_cache(model.which), model.fingerprint())
