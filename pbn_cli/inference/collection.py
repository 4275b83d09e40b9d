"""A whole collection at once: fill a model's embedding store (on one process or many), and say what each store holds.

``embed`` is what `pbn embed` runs, also under torchrun: every rank embeds its
share of the missing paintings' chunks and rank 0 writes them
(model/store.py), and then drops the rows of paintings no longer in the
workspace (``Store.prune``, which keeps the store's index in step): the
one place the store is rewritten. ``stores`` describes every store of a
workspace for `pbn index status`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pbn_cli.core import distributed
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.runs import find_run
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.cache import CacheData, SplitRows
from pbn_cli.inference import index
from pbn_cli.model import trained
from pbn_cli.model.store import CHUNK, Store, all_stores


@dataclass
class Embedded:
    run: str
    embedded: int  # paintings embedded by this pass
    paintings: int  # paintings of the workspace, all stored now
    seconds: float
    store: Path
    world: int  # processes that shared the work


def embed(ws: Workspace, *, run_name: str | None = None, which: str = "best", device_name: str = "auto",
          engine_name: str = "torch", half: bool = False, chunk: int = CHUNK, progress: Progress = SILENT) -> Embedded:
    """Embed every painting of the workspace that the run's store lacks (under torchrun: spread over the ranks),
    with ``engine_name`` (torch, or onnx in one process on the CPU)."""
    if engine_name == "onnx":
        return _embed_alone(ws, run_name, which, half, chunk, progress)
    from pbn_cli.core.device import select_device

    dist, device = distributed.setup(select_device(device_name))
    try:
        t0 = time.monotonic()
        model = trained.from_checkpoint(ws, find_run(ws, run_name), which)
        data = CacheData(ws)
        rows = data.split("all")
        done = model.fill(ws, data, rows, device, half=half, progress=progress, dist=dist, chunk=chunk)
        store = model.store(ws, half)
        if dist.primary:
            _prune(store, rows)
        return Embedded(model.name, done, len(rows), time.monotonic() - t0, store.folder, dist.world)
    finally:
        distributed.teardown(dist)


def _embed_alone(ws: Workspace, run_name: str | None, which: str, half: bool, chunk: int,
                 progress: Progress) -> Embedded:
    """``embed`` through onnxruntime in this one process."""
    t0 = time.monotonic()
    run = find_run(ws, run_name)
    model = trained.attach_runtime(run, trained.from_checkpoint(ws, run, which), progress)
    data = CacheData(ws)
    rows = data.split("all")
    done = model.fill(ws, data, rows, None, half=half, progress=progress, chunk=chunk)
    store = model.store(ws, half)
    _prune(store, rows)
    return Embedded(model.name, done, len(rows), time.monotonic() - t0, store.folder, 1)


def _prune(store: Store, rows: SplitRows) -> None:
    """Drop the store's rows of paintings not among ``rows`` (when they are most of it), its index following."""
    store.prune(rows, followers=[index.StoredIndex(store)])


def stores(ws: Workspace) -> list[dict]:
    """Every embedding store of the workspace: what it comes from, how much of the workspace it holds, its index."""
    found = all_stores(ws)
    rows = CacheData(ws).split("all") if found else None
    out = []
    for store in found:
        keys = store.keys()
        alive = int((~store.missing(rows)).sum()) if rows is not None else 0
        out.append({"store": store.folder.name, **store.description(), "stored": int(len(keys)), "workspace": len(rows),
                    "of_the_workspace": alive, "chunks": len(store.chunks()), "engines": store.engines(),
                    "megabytes": round(store.size() / 2**20, 1), "index": index.status(store)})
    return out
