"""search: the workspace's paintings nearest to an image, and their artists' vote.

The workspace's embeddings come from the model's embedding store
(model/store.py): each painting is embedded once per model, and only the
paintings added since are embedded by the next search. A search reads only
the workspace's paintings from the store, so rows kept there for paintings
gone (or cached anew) never answer, and it never rewrites the store: `pbn
embed` drops such rows (``Store.prune``). Exact search is float32 matrix
products in bounded chunks (``exact_nearest``); above ``index.AUTO_BYTES``
of embeddings, or with ``--index faiss``, a FAISS index (inference/index.py)
answers instead. ``--where`` filters by the workspace's columns
(inference/filters.py).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pbn_cli.core.errors import InputError
from pbn_cli.core.pictures import pyplot, save_figure, short
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.workspace import Workspace
from pbn_cli.data import imaging
from pbn_cli.data.cache import CacheData
from pbn_cli.data.near_duplicates import NEAR_BITS, hamming, phash
from pbn_cli.data.paths import painting_files
from pbn_cli.answers.metrics import row_distances
from pbn_cli.model.trained import TrainedModel

if TYPE_CHECKING:
    import torch

SPLITS = ("all", "train", "val", "calib", "test")
CHUNK_ROWS = 65_536  # gallery rows a matrix product takes at once: memory ~ CHUNK_ROWS x queries x 4 bytes
SPARE = 32  # candidates beyond k measured again exactly: float32 products blur the nearest few's order


@dataclass
class Gallery:
    """The workspace's paintings (``table``: image_id, artist, split, cache_row, the CSV's own columns) and their
    embeddings (``emb``: float32, one row per table row), as one model sees them."""

    table: pd.DataFrame
    emb: np.ndarray
    files: dict[str, str] = field(default_factory=dict)  # each painting's original file, by image_id (when found)

    def __post_init__(self):
        self._sq = None
        self._by_real_path = None

    @property
    def squared_norms(self) -> np.ndarray:
        if self._sq is None:
            self._sq = np.einsum("ij,ij->i", self.emb, self.emb)
        return self._sq


@dataclass
class SearchResult:
    neighbours: pd.DataFrame  # image_id, artist, split, cache_row, distance, same_artist_probability, same_painting
    vote: list[tuple[str, int]]  # artists of the neighbours, most frequent first (the query's own painting not)


def gallery(ws: Workspace, model: TrainedModel, device: torch.device | None, *, half: bool = False,
            progress: Progress = SILENT) -> Gallery:
    """Every cached painting with its embedding from the model's store (only paintings not stored yet are embedded,
    and nothing stored is rewritten: stale rows are left out because only the workspace's paintings are read)."""
    data = CacheData(ws)
    emb = model.embeddings(ws, data, data.split("all"), device, half=half, progress=progress)
    try:
        files = painting_files(ws)
    except InputError:  # the image folder moved: no query is taken for one of its files
        files = {}
    return Gallery(data.table.reset_index(drop=True), emb, files)


def exact_nearest(g: Gallery, queries: np.ndarray, k: int, keep: np.ndarray | None = None,
                  chunk: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` gallery rows nearest to each query (float32 products in chunks): (indices, squared distances),
    nearest first; rows where ``keep`` is False are skipped. Memory: the gallery, plus a chunk x queries block."""
    q = np.ascontiguousarray(queries, np.float32).reshape(-1, g.emb.shape[1])
    q_sq = np.einsum("ij,ij->i", q, q)[:, None]
    want, k = k, k + SPARE
    best_i = np.zeros((len(q), 0), np.int64)
    best_d = np.zeros((len(q), 0), np.float32)
    for start in range(0, len(g.emb), chunk):
        block = g.emb[start : start + chunk]
        d = q_sq + g.squared_norms[start : start + chunk][None, :] - 2 * (q @ block.T)
        if keep is not None:
            d[:, ~keep[start : start + chunk]] = np.inf
        take = min(k, d.shape[1])
        part = np.argpartition(d, take - 1, axis=1)[:, :take] if take < d.shape[1] else np.tile(np.arange(d.shape[1]), (len(q), 1))
        best_i = np.concatenate([best_i, part + start], 1)
        best_d = np.concatenate([best_d, np.take_along_axis(d, part, 1)], 1)
        if best_i.shape[1] > k:
            top = np.argpartition(best_d, k - 1, axis=1)[:, :k]
            best_i, best_d = np.take_along_axis(best_i, top, 1), np.take_along_axis(best_d, top, 1)
    rows, d = rerank(g, q, best_i, np.isfinite(best_d))
    return rows[:, :want], d[:, :want]


def rerank(g: Gallery, q: np.ndarray, candidates: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates measured again as direct differences (the expansion |q|² + |x|² - 2q·x loses digits for near
    neighbours) and sorted: (rows, squared distances), nearest first, ties by row; -1 / inf where none."""
    d = np.where(valid, ((g.emb[np.where(valid, candidates, 0)] - q[:, None, :]) ** 2).sum(-1), np.inf)
    order = np.lexsort((candidates, d), axis=1)
    rows, d = np.take_along_axis(candidates, order, 1), np.take_along_axis(d, order, 1)
    finite = np.isfinite(d)
    return np.where(finite, rows, -1), np.where(finite, d, np.inf).astype(np.float32)


def check_request(k: int, split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if k < 1:
        raise InputError("-k must be at least 1")


def candidates(g: Gallery, split: str = "all", leave_out: np.ndarray | None = None,
               where: np.ndarray | None = None) -> np.ndarray | None:
    """Which gallery rows may answer: those of ``split``, passing the filters, not left out (None: all)."""
    keep = np.ones(len(g.table), bool)
    if split != "all":
        keep &= (g.table["split"] == split).to_numpy()
    if leave_out is not None:
        keep &= ~leave_out
    if where is not None:
        keep &= where
    return None if keep.all() else keep


def nearest(g: Gallery, model: TrainedModel, query: np.ndarray, *, k: int, split: str = "all",
            leave_out: np.ndarray | None = None, where: np.ndarray | None = None, finder=None,
            copies: np.ndarray | None = None) -> SearchResult:
    """The ``k`` paintings of the gallery nearest to the embedding ``query`` (``finder``: an index's search);
    ``copies``: gallery rows that are the query's painting in another file, shown (marked ``same_painting``) but
    not counted in the vote of the artists."""
    check_request(k, split)
    keep = candidates(g, split, leave_out, where)
    idx, _ = (finder or exact_nearest)(g, query[None], k, keep)
    idx = idx[0][idx[0] >= 0]
    near = g.table.iloc[idx][["image_id", "artist", "split", "cache_row"]].copy()
    near["distance"] = row_distances(g.emb[idx], np.broadcast_to(query, (len(idx), len(query))))
    near["same_artist_probability"] = [model.probability(x) for x in near["distance"]]
    near["same_painting"] = np.zeros(len(idx), bool) if copies is None else copies[idx]
    near = near.sort_values("distance", kind="stable")
    return SearchResult(near.reset_index(drop=True), Counter(near.loc[~near["same_painting"], "artist"]).most_common())


def same_file(g: Gallery, query) -> np.ndarray:
    """Gallery rows whose file is the query file itself (none for a picture in memory)."""
    if not imaging.is_file(query):
        return np.zeros(len(g.table), bool)
    if g._by_real_path is None:  # once per gallery: a kept gallery answers many queries
        g._by_real_path = {}
        for i, p in g.files.items():
            g._by_real_path.setdefault(os.path.realpath(p), set()).add(i)
    mine = g._by_real_path.get(os.path.realpath(query), set())
    return g.table["image_id"].astype(str).isin(mine).to_numpy()


def same_picture(g: Gallery, pixels: np.ndarray) -> np.ndarray:
    """Gallery rows whose perceptual hash is within ``NEAR_BITS`` of the query's as the model reads it (``pixels``):
    the same picture, whatever its file (none for a cache made before pbn kept the hashes in its manifest)."""
    if "phash" not in g.table:
        return np.zeros(len(g.table), bool)
    return hamming(g.table["phash"].to_numpy(np.int64), np.int64(phash(pixels))) <= NEAR_BITS


def same_painting(g: Gallery, image, pixels: np.ndarray) -> np.ndarray:
    """Gallery rows that are the query itself: its own file, or the same picture in another file."""
    return same_file(g, image) | same_picture(g, pixels)


def search(ws: Workspace, model: TrainedModel, *, image, k: int = 10, split: str = "all",
           where: np.ndarray | None = None, device: torch.device | None, half: bool = False, finder=None,
           progress: Progress = SILENT, g: Gallery | None = None, pixels: np.ndarray | None = None) -> SearchResult:
    """The ``k`` paintings nearest to ``image`` (a file, a PIL image or an array), the query's own file left out
    and the same painting in another file marked (``nearest``); ``pixels``: the image as ``model.read`` gave it
    already (not decoded again)."""
    check_request(k, split)
    pixels = model.read(image) if pixels is None else pixels
    query = model.embed_one(pixels, device)
    g = g or gallery(ws, model, device, half=half, progress=progress)
    own = same_file(g, image)
    return nearest(g, model, query, k=k, split=split, leave_out=own, where=where, finder=finder,
                   copies=same_picture(g, pixels) & ~own)


def search_sheet(ws: Workspace, model: TrainedModel, image, result: SearchResult, path: Path,
                 pixels: np.ndarray | None = None) -> None:
    """The query (``pixels``: as the model read it, when at hand) and its neighbours as the model saw them, with
    artists and distances."""
    plt = pyplot()
    data = CacheData(ws)
    n = len(result.neighbours) + 1
    cols = min(n, 6)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].imshow(model.read(image) if pixels is None else pixels)
    axes[0, 0].set_title(f"query\n{short(imaging.image_name(image), 20)}", fontsize=8)
    for k, row in enumerate(result.neighbours.itertuples(), start=1):
        ax = axes[k // cols, k % cols]
        ax.imshow(np.asarray(data.images[row.cache_row]))
        ax.set_title(f"{short(row.artist, 20)}\n" + ("the same painting" if row.same_painting else
                                                     f"d={row.distance:.3f} p={row.same_artist_probability:.2f}"),
                     fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
