"""eval: embed every painting of a split once and compute the metrics of docs/metrics.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pbn_cli import locking
from pbn_cli.atomic import write_text
from pbn_cli.errors import InputError
from pbn_cli.evaluation import metrics
from pbn_cli.evaluation.embed import embed_images
from pbn_cli.manifest import Record, write_manifest
from pbn_cli.model.embedder import Embedder
from pbn_cli.runs import Run, latest_run, run_for
from pbn_cli.training import checkpoint
from pbn_cli.training.config import TrainConfig
from pbn_cli.training.data import CacheData
from pbn_cli.training.loop import select_device
from pbn_cli.workspace import Workspace


@dataclass
class Evaluation:
    run: str
    split: str
    folder: Path
    metrics: dict


def load_model(path: Path, device: torch.device) -> tuple[Embedder, TrainConfig, dict]:
    """The network of a checkpoint, in eval mode on ``device``, with its configuration."""
    state = checkpoint.load(path)
    config = TrainConfig.from_dict(state["config"])
    model = Embedder(config.model, load_pretrained=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, state


def compute_metrics(emb: np.ndarray, artists, seed: int, n_triplets: int, group_size: int) -> dict:
    """Every figure of docs/metrics.md that needs only the split's embeddings."""
    triplets = metrics.sample_triplets(artists, n_triplets, seed)
    auc, n_pairs, n_groups = metrics.pair_auc(emb, artists, seed, group_size)
    p1, map_r, n_queries = metrics.retrieval(emb, artists)
    return {
        "triplet_accuracy": metrics.triplet_accuracy(emb, triplets),
        "reference_batch4_accuracy": metrics.reference_batch4_accuracy(emb, triplets),
        "pair_auc": auc,
        "precision_at_1": p1,
        "map_at_r": map_r,
        "n_paintings": int(len(emb)),
        "n_artists": int(len(np.unique(np.asarray(artists, dtype=str)))),
        "n_triplets": int(len(triplets)),
        "n_pairs": int(n_pairs),
        "n_groups": int(n_groups),
        "n_queries": int(n_queries),
        "seed": seed,
    }


def evaluate(
    ws: Workspace,
    run_name: str | None = None,
    split: str = "test",
    which: str = "best",
    device_name: str = "auto",
    seed: int = 0,
    n_triplets: int = 20_000,
    group_size: int = 1800,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Evaluation:
    if split not in ("test", "val", "train"):
        raise InputError(f"--split must be test, val or train, got {split!r}")
    run: Run = run_for(ws, run_name) if run_name else latest_run(ws)
    ckpt = run.checkpoint(which)
    if not ckpt.exists():
        raise InputError(f"run {run.name} has no {which} checkpoint ({ckpt}); train it first")
    device = select_device(device_name)
    model, config, state = load_model(ckpt, device)
    data = CacheData(ws)
    rows = data.split(split)
    if len(rows) < 3 or len(np.unique(rows.labels)) < 2:
        raise InputError(f"the {split} split has too few paintings or artists to evaluate")
    folder = run.folder / "eval" / (split if which == "best" else f"{split}-{which}")
    with locking.hold(folder.parent / f"{folder.name}.lock", f"evaluation {folder}"):
        if on_start:
            on_start(len(rows))
        emb = embed_images(
            model, lambda idx: data.gather(rows.rows[idx]), len(rows), config.model.input_size,
            config.view, config.model.normalize, device, on_progress=on_progress,
        )
        figures = compute_metrics(emb, rows.artists, seed, n_triplets, group_size)
        figures.update(checkpoint=str(ckpt.relative_to(ws.root)), epoch=int(state["epoch"]), split=split, run=run.name)
        frame = pd.DataFrame({"image_id": rows.image_ids, "artist": rows.artists, "embedding": list(emb)})
        write_manifest(folder / "embeddings.parquet", frame, Record("embeddings", {"run": run.name, "checkpoint": which, "split": split}))
        write_text(folder / "metrics.json", json.dumps(figures, indent=2))
    return Evaluation(run.name, split, folder, figures)
