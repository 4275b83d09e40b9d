"""A FAISS index over a model's embedding store, for collections where exact search is no longer quick.

Built once per store and kept beside it (``index.faiss``, ``index.json``,
``index-ids.npy``); when the store grows, the new paintings are added to it
(nothing is trained again); when many of its paintings are gone (cleaned
away), it is built anew. The index is IVF with 8-bit scalar quantisation on
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
from pbn_cli.core.errors import InputError
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


def store_ids(store: Store, g: Gallery) -> np.ndarray:
    """A stable id for each gallery row: its chunk's number and its row within the chunk."""
    at = store.where_keys(g.table["image_id"].to_numpy(str), g.table["digest"].to_numpy(str))
    return at["chunk"].str[5:11].astype(np.int64).to_numpy() * 2**20 + at["row"].to_numpy(np.int64)


@dataclass
class FaissIndex:
    index: object  # faiss.IndexIVFScalarQuantizer
    ids: np.ndarray  # the store id of each gallery row
    nprobe: int
    about: dict

    def __post_init__(self):
        self._row_of = dict(zip(self.ids.tolist(), range(len(self.ids))))

    def __call__(self, g: Gallery, queries: np.ndarray, k: int, keep: np.ndarray | None = None):
        """As ``search.exact_nearest``: (gallery rows, squared distances), nearest first; -1 / inf past the end."""
        faiss = _faiss()
        q = np.ascontiguousarray(queries, np.float32).reshape(-1, g.emb.shape[1])
        params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        allowed = self.ids if keep is None else self.ids[keep]
        if keep is not None or len(allowed) < self.index.ntotal:
            params.sel = faiss.IDSelectorBatch(allowed)
        _, found = self.index.search(q, min(k * RERANK, max(k, self.index.ntotal)), params=params)
        rows = np.array([[self._row_of.get(int(i), -1) for i in line] for line in found], np.int64).reshape(len(q), -1)
        rows, d = rerank(g, q, rows, rows >= 0)
        return rows[:, :k], d[:, :k]


def _paths(store: Store):
    return store.folder / "index.faiss", store.folder / "index.json", store.folder / "index-ids.npy"


def status(store: Store) -> dict | None:
    """What ``index.json`` says of the store's index (None when there is none)."""
    return read_json(_paths(store)[1], "delete it and run `pbn index build` again")


def load_or_build(g: Gallery, store: Store, *, nprobe: int | None = None, progress: Progress = SILENT) -> FaissIndex:
    """The store's index, extended with the gallery's paintings it lacks, or built (and tuned) when it has none."""
    faiss = _faiss()
    path, about_path, ids_path = _paths(store)
    ids = store_ids(store, g)
    about = status(store)
    if about is not None and path.exists() and ids_path.exists():
        index = faiss.read_index(str(path))
        held = np.load(ids_path)
        dead = ~np.isin(held, ids)
        if dead.mean() <= REBUILD_DEAD if len(held) else True:
            new = ~np.isin(ids, held)
            if new.any():
                progress.message(f"index: adding {int(new.sum()):,} paintings to the FAISS index")
                index.add_with_ids(g.emb[new], ids[new])
                held = np.concatenate([held, ids[new]])
                _save(store, index, held, {**about, "paintings": int(len(held)), "updated": time.strftime("%Y-%m-%d %H:%M:%S")})
            return FaissIndex(index, ids, nprobe or about["nprobe"], about)
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
        index.add_with_ids(g.emb[start : start + 65_536], ids[start : start + 65_536])
        progress.advance(min(65_536, n - start))
    built = time.monotonic() - t0
    probe, recall = tune(FaissIndex(index, ids, 1, {}), g, seed=seed) if nprobe is None else (nprobe, None)
    if recall is None:
        recall = recall_at_10(FaissIndex(index, ids, probe, {}), g, seed=seed)
    about = {"kind": "IVF + 8-bit scalar quantisation (FAISS)", "cells": cells, "nprobe": probe, "recall_at_10": recall,
             "paintings": int(n), "dimensions": int(dim), "build_seconds": round(built, 1),
             "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    _save(store, index, ids, about)
    return FaissIndex(index, ids, probe, about)


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


def _save(store: Store, index, ids: np.ndarray, about: dict) -> None:
    faiss = _faiss()
    path, about_path, ids_path = _paths(store)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    with atomic_path(ids_path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, ids)
    write_text(about_path, json.dumps(about, indent=2))


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
