"""A network's embeddings of the workspace's paintings, through the embedding store (model/store.py).

The untouched pretrained copy of --keep-pretrained never changes: its mean
features of each painting are stored once, under a key of its own weights
and geometry (so every run that keeps the same copy shares them), and read
back for validation in every epoch, eval, search and serve; only the
trained part is computed again.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from pbn_cli.core.distributed import Dist, broadcast_object
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.cache import CacheData, SplitRows
from pbn_cli.model.checkpoint import weights_digest
from pbn_cli.networks.embed import embed_images
from pbn_cli.networks.embedder import Embedder
from pbn_cli.model.store import CHUNK, Store, model_store, pretrained_store


def copy_store(ws: Workspace, network: Embedder, data: CacheData) -> Store:
    """The store of the copy's mean features, keyed by its weights and everything that shapes what it sees."""
    c = network.config
    geometry = json.dumps([c.backbone, c.input_size, c.view, c.levels, c.mean, c.std, data.size, data.fit])
    store = pretrained_store(ws, weights_digest(network.kept.state_dict(), geometry))
    store.describe({"model": f"the untouched pretrained copy of {c.backbone}", "embedding": "mean features of the "
                    "painting's views (centred and weighted when a run's embedding is made)", "levels": c.levels})
    return store


def copy_means(ws: Workspace, network: Embedder, data: CacheData, rows: SplitRows, device: torch.device, *,
               progress: Progress = SILENT, dist: Dist = Dist()) -> np.ndarray:
    """The copy's mean features of ``rows``, embedding only those not stored yet."""
    store = copy_store(ws, network, data)
    store.fill(rows, lambda part: embed_images(network, lambda idx: data.gather(part.rows[idx]), len(part), device,
                                               what=network.kept_means),
               dist=dist, progress=progress, description="the pretrained copy")
    return store.read(rows)


def embed_paintings(network: Embedder, data: CacheData, rows: SplitRows, device: torch.device, *,
                    copy: np.ndarray | None = None, progress: Progress | None = None) -> np.ndarray:
    """The embeddings of ``rows``: the trained part computed, the copy's mean features (when kept) given."""
    pixels = lambda idx: data.gather(rows.rows[idx])  # noqa: E731
    if network.kept is None:
        return embed_images(network, pixels, len(rows), device, progress=progress)
    tuned = embed_images(network, pixels, len(rows), device, what=network.tuned_paintings, progress=progress)
    return combine(network, tuned, copy)


@torch.no_grad()
def combine(network: Embedder, tuned: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Embeddings from the trained part and the copy's mean features (``Embedder.combine``)."""
    device = network.kept_center.device
    return network.combine(torch.from_numpy(tuned).to(device), torch.from_numpy(means).to(device)).cpu().numpy()


def fill_store(ws: Workspace, network: Embedder, key: str, data: CacheData, rows: SplitRows, device: torch.device, *,
               half: bool = False, about: dict | None = None, progress: Progress = SILENT, dist: Dist = Dist(),
               chunk: int = CHUNK) -> tuple[Store, int]:
    """Embed the ``rows`` missing from the store of the network whose weights ``key`` names (and, when it keeps a
    copy, the copy's features first): the store and how many paintings this pass embedded."""
    store = model_store(ws, key, half)
    store.describe(about or {})
    todo = rows[broadcast_object(dist, np.flatnonzero(store.missing(rows)) if dist.primary else None)]
    if not len(todo):
        return store, 0
    copies = None
    if network.kept is not None:
        copy_means(ws, network, data, todo, device, progress=progress, dist=dist)
        copies = copy_store(ws, network, data)
    done = store.fill(rows, lambda part: embed_paintings(network, data, part, device,
                                                         copy=copies.read(part) if copies else None),
                      chunk=chunk, dist=dist, progress=progress, description="the run's network")
    return store, done
