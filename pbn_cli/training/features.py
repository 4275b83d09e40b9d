"""--freeze-backbone: the backbone's features of fixed views of every painting, computed once, kept in the run.

Training views are the evaluation grid of each painting (model/views.py
``grid_views``) and their mirror images; validation views are the grid
alone, so a head trained on cached features is validated exactly as
``embed_images`` would embed the paintings. The file's name is a digest of
the backbone's weights, the cache and the views, so a changed cache or
backbone never reuses stale features.

``center_kept`` gives --keep-pretrained's untouched copy its centre: the
mean of its features over training paintings' grid views.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from pbn_cli.core.atomic import write_bytes
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.runs import Run
from pbn_cli.data.cache import CacheData, SplitRows
from pbn_cli.model.checkpoint import weights_digest
from pbn_cli.model.embed import painting_embeddings, paintings_per_batch
from pbn_cli.model.embedder import Embedder
from pbn_cli.model.views import grid_views, views_per_painting


def fixed_views(x: torch.Tensor, size: int, view: str, flips: bool) -> torch.Tensor:
    """(B, V, 3, size, size): the painting's grid views, then (with ``flips``) the same views mirrored."""
    v = views_per_painting(x.shape[1], size, view)
    grid = grid_views(x, size, view).reshape(x.shape[0], v, 3, size, size)
    return torch.cat([grid, grid.flip(-1)], 1) if flips else grid


@torch.no_grad()
def compute(model: Embedder, data: CacheData, rows: SplitRows, size: int, view: str, flips: bool,
            device: torch.device, progress: Progress = SILENT, backbone: torch.nn.Module | None = None,
            dtype=np.float16) -> np.ndarray:
    """(N, V, F) backbone (or ``backbone``'s) features of every painting's fixed views, float16 unless asked."""
    model.eval()
    per = views_per_painting(data.size, size, view) * (2 if flips else 1)
    batch = paintings_per_batch(device, per)
    out = np.zeros((len(rows), per, model.feature_dim), dtype)
    for start in range(0, len(rows), batch):
        x = torch.from_numpy(data.gather(rows.rows[start : start + batch])).to(device)
        views = fixed_views(x, size, view, flips)
        b = views.shape[0]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            f = model.backbone_features(views.reshape(-1, 3, size, size), backbone).float()
        out[start : start + b] = f.reshape(b, per, -1).cpu().numpy().astype(dtype)
        progress.advance(b)
    return out


def cached(run: Run, model: Embedder, data: CacheData, rows: SplitRows, split: str, size: int, view: str,
           flips: bool, device: torch.device, progress: Progress = SILENT) -> torch.Tensor:
    """The features of ``compute``, read from the run when present, else computed and written atomically."""
    salt = f"{split}:{size}:{view}:{flips}:{data.fingerprints}"
    key = weights_digest(model.backbone.state_dict(), salt)
    path = run.features(f"{split}-{key}")
    if path.exists():
        return torch.from_numpy(np.load(path))
    progress.start(len(rows), description=f"train: backbone features of the {split} paintings", unit="paintings")
    feats = compute(model, data, rows, size, view, flips, device, progress)
    buf = io.BytesIO()
    np.save(buf, feats)
    write_bytes(path, buf.getvalue())
    return torch.from_numpy(feats)


@torch.no_grad()
def embed_cached(model: Embedder, feats: torch.Tensor, device: torch.device) -> np.ndarray:
    """Embeddings from cached grid features: head and normalisation per view, mean over views, as embed_images does."""
    model.eval()
    out = []
    for start in range(0, len(feats), 1024):
        f = feats[start : start + 1024].to(device).float()
        b, v = f.shape[:2]
        z = model.finish(model.head(f.reshape(b * v, -1)).float()).reshape(b, v, -1)
        out.append(painting_embeddings(z, model.config.normalize))
    return np.concatenate(out)


@torch.no_grad()
def center_kept(model: Embedder, data: CacheData, rows: SplitRows, size: int, view: str, device: torch.device,
                limit: int = 256, progress: Progress = SILENT) -> None:
    """--keep-pretrained: set the untouched copy's centre to the mean of its features over the grid views of up to
    ``limit`` training paintings, evenly spread (the mean of so many is stable; all of them would cost minutes on a CPU)."""
    pick = np.unique(np.linspace(0, len(rows) - 1, min(limit, len(rows))).round().astype(int))
    progress.start(len(pick), description="train: centring the pretrained copy's features", unit="paintings")
    some = SplitRows(rows.rows[pick], rows.labels[pick], rows.image_ids[pick], rows.artists[pick])
    feats = compute(model, data, some, size, view, False, device, progress, model.kept, np.float32)
    model.kept_center.copy_(torch.from_numpy(feats.reshape(-1, feats.shape[-1]).mean(0, dtype=np.float64)).float())
