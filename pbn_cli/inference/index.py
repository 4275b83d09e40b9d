"""A FAISS index over a model's embedding store, for collections where exact search is no longer quick.

Built once per store and kept beside it (``StoredIndex``: ``index.faiss``,
``index.json``, ``index-ids.npy``). It names the store's rows by their ids
(``Store.ids``) and follows the store (``store.StoreFollower``): when the
store grows, the new paintings are added to it (nothing is trained again);
when the store rewrites its chunks, their ids are renumbered; when many of
its paintings are gone (cleaned away), it is built anew. The index is IVF with 8-bit scalar quantisation on
L2 distances, pbn's own: k-means cells fitted on a sample of the store, each
vector in its nearest cell at a byte a dimension; a query scans the
``nprobe`` cells nearest to it, and its best candidates are measured again
exactly on the float32 embeddings the search holds anyway, so the distances
it reports are exact. Why this and not HNSW: on a CPU it builds in minutes
for a million vectors, takes new vectors without retraining, and its memory
is a quarter of the vectors' (docs/scaling.md). ``nprobe`` is the smallest
that reaches recall@10 of ``TARGET_RECALL`` against exact search on a sample
of the store's own paintings; `pbn index status` shows both.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import numpy as np

from pbn_cli.core.atomic import atomic_path, read_json, write_text
from pbn_cli.core.errors import InputError, PbnError
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.inference.search import Gallery, exact_nearest, rerank
from pbn_cli.model.store import Store

KINDS = ("auto", "exact", "faiss")
#: `--index auto` picks FAISS above this many float32 bytes of embeddings: there exact search of one painting
#: takes about 0.1 s on a 2-core CPU (tests/benchmarks/index.py, docs/benchmarks.md)
AUTO_BYTES = 1_000_000_000
TARGET_RECALL = 0.95
RERANK = 10  # candidates measured exactly per neighbour asked for
REBUILD_DEAD = 0.2  # share of the index's paintings gone from the workspace above which it is built anew


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError("--index faiss needs the faiss extra: pip install 'pbn[faiss]'") from None
    return faiss


def _positions(among: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where each of ``wanted`` is in ``among`` (values unique), -1 where it is not."""
    if not len(among):
        return np.full(len(wanted), -1, np.int64)
    order = np.argsort(among, kind="stable")
    at = order[np.minimum(np.searchsorted(among, wanted, sorter=order), len(among) - 1)]
    return np.where(among[at] == wanted, at, -1)


def gallery_ids(g: Gallery, store: Store) -> np.ndarray:
    """The store id (``Store.ids``) of each gallery row; one line when a painting is not stored."""
    ids = store.ids(g.table["image_id"].to_numpy(str), g.table["digest"].to_numpy(str))
    if (ids < 0).any():
        first = g.table["image_id"].iloc[int(np.flatnonzero(ids < 0)[0])]
        raise PbnError(f"painting {first} is not in the embedding store {store.folder}; embed it first (`pbn embed`)")
    return ids


@dataclass
class FaissIndex:
    """The index ready to search: its FAISS labels are positions in ``held``."""

    index: object  # faiss.IndexIVFScalarQuantizer
    ids: np.ndarray  # the store id of each gallery row
    held: np.ndarray  # the store id of each of the index's vectors, by its label (-1: gone from the store)
    nprobe: int
    about: dict

    def __post_init__(self):
        self._row = _positions(self.ids, self.held)  # each vector's gallery row (-1: not in the gallery)

    def __call__(self, g: Gallery, queries: np.ndarray, k: int, keep: np.ndarray | None = None):
        """As ``search.exact_nearest``: (gallery rows, squared distances), nearest first; -1 / inf past the end."""
        faiss = _faiss()
        q = np.ascontiguousarray(queries, np.float32).reshape(-1, g.emb.shape[1])
        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        live = self._row >= 0
        if keep is not None:
            live &= keep[np.maximum(self._row, 0)]
        if not live.all():  # stale vectors and rows not asked for are never candidates
            params.sel = faiss.IDSelectorBatch(np.flatnonzero(live).astype(np.int64))
        _, found = self.index.search(q, min(k * RERANK, max(k, self.index.ntotal)), params=params)
        rows = np.where(found >= 0, self._row[np.maximum(found, 0)], -1).astype(np.int64).reshape(len(q), -1)
        rows, d = rerank(g, q, rows, rows >= 0)
        return rows[:, :k], d[:, :k]


@dataclass
class StoredIndex:
    """A store's FAISS index on disk, beside its chunks: ``index.faiss`` (the cells and 8-bit vectors, each under
    its position), ``index-ids.npy`` (each position's store id) and ``index.json`` (what it is, for `pbn index
    status`). It follows the store (``store.StoreFollower``): a rewrite of the store renumbers the ids only."""

    store: Store

    @property
    def files(self):
        folder = self.store.folder
        return folder / "index.faiss", folder / "index.json", folder / "index-ids.npy"

    def about(self) -> dict | None:
        """What ``index.json`` says (None when there is no index)."""
        return read_json(self.files[1], "delete it and run `pbn index build` again")

    def held(self) -> np.ndarray | None:
        """The store id of each of the index's vectors (-1: gone), None when there is no index of this kind, or
        when its three files do not tell of the same vectors (a save was killed between them): built anew."""
        return self.read()[1]

    def read(self) -> tuple[dict | None, np.ndarray | None]:
        """``about()`` and ``held()``, index.json read once."""
        path, _, ids_path = self.files
        about = self.about()
        if about is None or about.get("labels") != "positions" or not path.exists() or not ids_path.exists():
            return about, None  # none, or one from before its labels were positions: built anew
        held = np.load(ids_path)
        return about, (held if about.get("vectors") == len(held) else None)

    def renumber(self, old: np.ndarray, new: np.ndarray) -> None:
        """The store's row ``old[i]`` is now ``new[i]``; rows not in ``old`` are gone (and never answer)."""
        about, held = self.read()
        if held is None:
            return
        at = _positions(np.asarray(old, np.int64), held)
        held = np.where(at >= 0, np.asarray(new, np.int64)[np.maximum(at, 0)], -1)
        about = {**about, "paintings": int((held >= 0).sum()), "renumbered": time.strftime("%Y-%m-%d %H:%M:%S")}
        self._write_ids(held)
        write_text(self.files[1], json.dumps(about, indent=2))

    def save(self, index, held: np.ndarray, about: dict) -> None:
        with atomic_path(self.files[0]) as tmp:
            _faiss().write_index(index, str(tmp))
        self._write_ids(held)
        # index.json last, naming how many vectors the other two hold: a save killed midway is seen as one
        write_text(self.files[1], json.dumps({**about, "labels": "positions", "vectors": int(len(held))}, indent=2))

    def _write_ids(self, held: np.ndarray) -> None:
        with atomic_path(self.files[2]) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, held)


def status(store: Store) -> dict | None:
    """What ``index.json`` says of the store's index (None when there is none)."""
    return StoredIndex(store).about()


def load_or_build(g: Gallery, store: Store, *, nprobe: int | None = None, progress: Progress = SILENT) -> FaissIndex:
    """The store's index, extended with the gallery's paintings it lacks, or built (and tuned) when it has none."""
    faiss = _faiss()
    stored = StoredIndex(store)
    ids = gallery_ids(g, store)
    about, held = stored.read()
    index = faiss.read_index(str(stored.files[0])) if held is not None else None
    whole = index is not None and index.ntotal == len(held)  # else a save was killed after index.faiss
    if whole and (not len(held) or (~np.isin(held, ids)).mean() <= REBUILD_DEAD):
        new = ~np.isin(ids, held)
        if new.any():
            progress.message(f"index: adding {int(new.sum()):,} paintings to the FAISS index")
            index.add_with_ids(g.emb[new], np.arange(len(held), len(held) + int(new.sum()), dtype=np.int64))
            held = np.concatenate([held, ids[new]])
            about = {**about, "paintings": int((held >= 0).sum()), "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
            stored.save(index, held, about)
        return FaissIndex(index, ids, held, nprobe or about["nprobe"], about)
    return build(g, store, ids, nprobe=nprobe, progress=progress)


def build(g: Gallery, store: Store, ids: np.ndarray, *, nprobe: int | None = None, progress: Progress = SILENT,
          seed: int = 0) -> FaissIndex:
    """Train the cells on a sample, add every painting, tune nprobe against exact search; written beside the store."""
    faiss = _faiss()
    n, dim = g.emb.shape
    t0 = time.monotonic()
    cells = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
    quantizer = faiss.IndexFlatL2(dim)
    index = faiss.IndexIVFScalarQuantizer(quantizer, dim, cells, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2)
    rng = np.random.default_rng(seed)
    sample = g.emb[np.sort(rng.choice(n, min(n, 64 * cells, 200_000), replace=False))]
    progress.message(f"index: k-means of {cells:,} cells on {len(sample):,} of {n:,} embeddings")
    index.train(np.ascontiguousarray(sample))
    progress.start(n, description="index: adding paintings", unit="paintings")
    for start in range(0, n, 65_536):
        index.add_with_ids(g.emb[start : start + 65_536], np.arange(start, min(start + 65_536, n), dtype=np.int64))
        progress.advance(min(65_536, n - start))
    built = time.monotonic() - t0
    probe, recall = tune(FaissIndex(index, ids, ids, 1, {}), g, seed=seed) if nprobe is None else (nprobe, None)
    if recall is None:
        recall = recall_at_10(FaissIndex(index, ids, ids, probe, {}), g, seed=seed)
    about = {"kind": "IVF + 8-bit scalar quantisation (FAISS)", "cells": cells, "nprobe": probe, "recall_at_10": recall,
             "paintings": int(n), "dimensions": int(dim), "build_seconds": round(built, 1),
             "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    StoredIndex(store).save(index, ids, about)
    return FaissIndex(index, ids, ids, probe, about)


def recall_at_10(finder: FaissIndex, g: Gallery, queries: int = 200, seed: int = 0) -> float:
    """Share of the exact 10 nearest that the index finds too, for a seeded sample of the gallery's paintings
    (each query's own row left out of both: finding a painting itself is no test)."""
    pick = np.random.default_rng([seed, 1]).choice(len(g.emb), min(queries, len(g.emb)), replace=False)
    k = min(10, len(g.emb) - 1)
    exact, _ = exact_nearest(g, g.emb[pick], k + 1)
    found, _ = finder(g, g.emb[pick], k + 1)
    truth = [[r for r in row if r != p][:k] for row, p in zip(exact, pick)]
    return float(np.mean([len(set(t) & set(row)) / k for t, row in zip(truth, found)]))


def tune(finder: FaissIndex, g: Gallery, seed: int = 0) -> tuple[int, float]:
    """The smallest nprobe (1, 2, 4, ...) whose recall@10 reaches TARGET_RECALL, and that recall."""
    cells = finder.index.nlist
    probe = 1
    while True:
        finder.nprobe = probe
        recall = recall_at_10(finder, g, seed=seed)
        if recall >= TARGET_RECALL or probe >= cells:
            return probe, recall
        probe = min(cells, probe * 2)


def finder_for(kind: str, g: Gallery, store: Store, progress: Progress = SILENT):
    """``exact_nearest`` or the store's FAISS index, as ``--index`` asks (auto: FAISS above AUTO_BYTES)."""
    if kind not in KINDS:
        raise InputError(f"--index must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = "faiss" if g.emb.shape[0] * g.emb.shape[1] * 4 > AUTO_BYTES else "exact"
        if kind == "faiss":
            try:
                _faiss()
            except InputError:
                return exact_nearest  # exact still answers, only slower
    return exact_nearest if kind == "exact" else load_or_build(g, store, progress=progress)
