"""--freeze-backbone: the backbone's features of fixed views of every painting, computed once, kept in the run.

Training views are the evaluation grid of each painting (networks/views.py
``grid_views``) and their mirror images; validation views are the grid
alone, so a head trained on cached features is validated exactly as
``embed_images`` would embed the paintings. The file's name is a digest of
the backbone's weights, the cache and the views, so a changed cache or
backbone never reuses stale features.
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
from pbn_cli.networks.embed import paintings_per_batch
from pbn_cli.networks.embedder import Embedder, autocast
from pbn_cli.networks.views import grid_views, views_per_painting


def fixed_views(x: torch.Tensor, network: Embedder, flips: bool) -> torch.Tensor:
    """(B, V, 3, S, S): the painting's grid views as the network sees them, then (with ``flips``) mirrored."""
    c = network.config
    v = views_per_painting(x.shape[1], c.input_size, c.view)
    grid = grid_views(x, c.input_size, c.view).reshape(x.shape[0], v, 3, c.input_size, c.input_size)
    return torch.cat([grid, grid.flip(-1)], 1) if flips else grid


@torch.no_grad()
def compute(network: Embedder, data: CacheData, rows: SplitRows, flips: bool, device: torch.device,
            progress: Progress = SILENT) -> np.ndarray:
    """(N, V, F) float16 backbone features of every painting's fixed views."""
    network.eval()
    c = network.config
    per = views_per_painting(data.size, c.input_size, c.view) * (2 if flips else 1)
    batch = paintings_per_batch(device, per)
    out = np.zeros((len(rows), per, network.feature_dim), np.float16)
    for start in range(0, len(rows), batch):
        x = torch.from_numpy(data.gather(rows.rows[start : start + batch])).to(device)
        views = fixed_views(x, network, flips)
        b = views.shape[0]
        with autocast(device):
            f = network.backbone_features(views.reshape(-1, *views.shape[2:])).float()
        out[start : start + b] = f.reshape(b, per, -1).cpu().numpy().astype(np.float16)
        progress.advance(b)
    return out


def cached_features(run: Run, network: Embedder, data: CacheData, rows: SplitRows, split: str, flips: bool,
                    device: torch.device, progress: Progress = SILENT) -> torch.Tensor:
    """The features of ``compute``, read from the run when present, else computed and written atomically."""
    c = network.config
    salt = f"{split}:{c.input_size}:{c.view}:{flips}:{data.fingerprints}"
    key = weights_digest(network.backbone.state_dict(), salt)
    path = run.features(f"{split}-{key}")
    if path.exists():
        return torch.from_numpy(np.load(path))
    progress.start(len(rows), description=f"train: backbone features of the {split} paintings", unit="paintings")
    feats = compute(network, data, rows, flips, device, progress)
    buf = io.BytesIO()
    np.save(buf, feats)
    write_bytes(path, buf.getvalue())
    return torch.from_numpy(feats)


@torch.no_grad()
def embed_cached(network: Embedder, feats: torch.Tensor, device: torch.device) -> np.ndarray:
    """Painting embeddings from cached grid features, as ``Embedder.tuned_paintings`` makes them from pixels."""
    network.eval()
    out = []
    for start in range(0, len(feats), 1024):
        f = feats[start : start + 1024].to(device).float()
        b, v = f.shape[:2]
        z = network.finish(network.head(f.reshape(b * v, -1)).float())
        out.append(network.finish(z.reshape(b, v, -1).mean(1)).cpu().numpy())
    return np.concatenate(out)
