"""search: the workspace's paintings nearest to an image, and their artists' vote.

The workspace's embeddings are computed once per run and checkpoint, stored
atomically in the run's search cache with the fingerprints of the split, the
cache and the weights they came from, and reused until one of those changes.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pbn_cli.core import locking
from pbn_cli.core.errors import InputError, PbnError
from pbn_cli.core.figures import pyplot, save_figure, short
from pbn_cli.core.manifest import Record, read_manifest, read_record, write_manifest
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.runs import run_for
from pbn_cli.core.workspace import Workspace
from pbn_cli.data import imaging
from pbn_cli.data.cache import CacheData
from pbn_cli.data.paths import image_root
from pbn_cli.model.trained import TrainedModel

SPLITS = ("all", "train", "val", "test")


@dataclass
class SearchResult:
    neighbours: pd.DataFrame  # image_id, artist, split, distance, same_artist_probability
    vote: list[tuple[str, int]]  # artists of the neighbours, most frequent first


def workspace_embeddings(ws: Workspace, model: TrainedModel, device: torch.device,
                         progress: Progress = SILENT) -> pd.DataFrame:
    """Every cached painting's embedding for this run and checkpoint, computed once and reused."""
    data = CacheData(ws)
    path = run_for(ws, model.name).search_cache(model.which)
    inputs = {**data.fingerprints, "weights": model.fingerprint()}
    try:
        record = read_record(path)
        if record is not None and record.inputs == inputs:
            return read_manifest(path)[0]
    except PbnError:
        pass  # a damaged cache of embeddings is computed again
    with locking.hold(path.with_suffix(".lock"), f"search embeddings {path}"):
        table = data.table
        rows = table["cache_row"].to_numpy(np.int64)
        progress.start(len(rows))
        emb = model.embed_pixels(model.network(device), lambda idx: data.gather(rows[idx]), len(rows), device, progress)
        frame = pd.DataFrame({"image_id": table["image_id"].to_numpy(), "artist": table["artist"].to_numpy(),
                              "split": table["split"].to_numpy(), "cache_row": rows, "embedding": list(emb)})
        write_manifest(path, frame, Record("search", {"run": model.name, "checkpoint": model.which}, inputs))
    return frame


def _same_file(ws: Workspace, frame: pd.DataFrame, query: Path) -> np.ndarray:
    """Rows whose file is the query file itself."""
    split_record = ws.require("split")
    paths, _ = read_manifest(ws.manifest("split"))
    try:
        root = image_root(split_record)
    except InputError:
        return np.zeros(len(frame), bool)
    real = os.path.realpath(query)
    mine = {i for i, p in zip(paths["image_id"], paths["path"]) if os.path.realpath(os.path.join(root, p)) == real}
    return frame["image_id"].isin(mine).to_numpy()


def search(ws: Workspace, model: TrainedModel, *, image: Path, k: int = 10, split: str = "all",
           device: torch.device) -> SearchResult:
    check_request(k, split)
    if not Path(image).is_file():
        raise InputError(f"{image} does not exist")
    frame = workspace_embeddings(ws, model, device)
    query = model.embed_files([Path(image)], device)[0]
    return nearest(frame, model, query, k=k, split=split, leave_out=_same_file(ws, frame, Path(image)))


def check_request(k: int, split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if k < 1:
        raise InputError("-k must be at least 1")


def nearest(frame: pd.DataFrame, model: TrainedModel, query: np.ndarray, *, k: int, split: str = "all",
            leave_out: np.ndarray | None = None) -> SearchResult:
    """The ``k`` paintings of ``frame`` (``workspace_embeddings``) nearest to the embedding ``query``."""
    check_request(k, split)
    keep = np.ones(len(frame), bool) if leave_out is None else ~leave_out
    if split != "all":
        keep &= (frame["split"] == split).to_numpy()
    pool = frame[keep]
    query = query.astype(np.float64)
    emb = np.stack(pool["embedding"].to_numpy()).astype(np.float64) if len(pool) else np.zeros((0, len(query)))
    d = np.sqrt(((emb - query) ** 2).sum(1))
    order = np.argsort(d, kind="stable")[:k]
    near = pool.iloc[order][["image_id", "artist", "split", "cache_row"]].copy()
    near["distance"] = d[order]
    near["same_artist_probability"] = [model.probability(x) for x in d[order]]
    vote = Counter(near["artist"]).most_common()
    return SearchResult(near.reset_index(drop=True), vote)


def search_sheet(ws: Workspace, model: TrainedModel, image: Path, result: SearchResult, path: Path) -> None:
    """The query and its neighbours as the model saw them, with artists and distances."""
    plt = pyplot()
    data = CacheData(ws)
    n = len(result.neighbours) + 1
    cols = min(n, 6)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    axes[0, 0].imshow(imaging.load_rgb(str(image), model.image_size, model.fit))
    axes[0, 0].set_title(f"query\n{short(Path(image).name, 20)}", fontsize=8)
    for k, row in enumerate(result.neighbours.itertuples(), start=1):
        ax = axes[k // cols, k % cols]
        ax.imshow(np.asarray(data.images[row.cache_row]))
        ax.set_title(f"{short(row.artist, 20)}\nd={row.distance:.3f} p={row.same_artist_probability:.2f}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
