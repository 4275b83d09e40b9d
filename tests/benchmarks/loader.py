"""Training loader throughput: batches from the uint8 cache with augmentation on the device,
against a per-item PIL + torchvision-transforms DataLoader reading the original files.

Usage: python tests/benchmarks/loader.py [--device cpu|cuda] [--paintings N] [--batches B]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from pbn_cli.core.workspace import Workspace  # noqa: E402
from pbn_cli.data.cache import CacheData  # noqa: E402
from pbn_cli.data.synth import synth  # noqa: E402
from pbn_cli.networks.views import random_views  # noqa: E402
from pbn_cli.stages.clean import clean  # noqa: E402
from pbn_cli.stages.ingest import ingest  # noqa: E402
from pbn_cli.stages.resize import resize  # noqa: E402
from pbn_cli.stages.split import split  # noqa: E402
from pbn_cli.training.batches import Batch, Loader  # noqa: E402


class PerItem(torch.utils.data.Dataset):
    """The usual loader: open, decode, fit and augment one file per item."""

    def __init__(self, paths, transform):
        self.paths, self.transform = paths, transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.open(self.paths[i]).convert("RGB"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paintings", type=int, default=400)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    import torchvision.transforms as T

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synth(root / "data", artists=args.paintings // 10, paintings=10, seed=0, min_size=600, max_size=1000)
        ws = Workspace(root / "ws")
        ingest(ws, root / "data/train_info.csv")
        clean(ws)
        split(ws, test_artists=0.0, val_fraction=0.0)
        resize(ws)
        data = CacheData(ws)
        rows = data.split("train")
        paths = [str(root / "data/train" / i) for i in rows.image_ids]
        rng = np.random.default_rng(0)
        n_images = args.batches * args.batch_size
        print(f"machine: {machine()}; device {device}; {len(rows)} paintings; {n_images} images per measurement")
        for name, kw in (
            ("reference augmentation (affine, flips, rotation, 256 px)", dict(size=256, view="resize", hflip=0.5, vflip=0.5, rotation=180, translate=0.2, zoom=1.2)),
            ("quick/default augmentation (random crops, 224 px)", dict(size=224, view="crop")),
        ):
            batches = [Batch(rng.integers(0, len(rows), args.batch_size), np.zeros(args.batch_size, np.int64)) for _ in range(args.batches)]
            gen = torch.Generator().manual_seed(0)
            loader = Loader(data, rows.rows, device)
            t = time.perf_counter()
            for _, x in loader(batches):
                views = random_views(x, generator=gen, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ours = n_images / (time.perf_counter() - t)
            size = kw["size"]
            if kw["view"] == "resize":
                tf = T.Compose([T.Resize(256), T.CenterCrop(256), T.RandomAffine(0, translate=(0.2, 0.2), scale=(1.2, 1.2)),
                                T.RandomHorizontalFlip(), T.RandomVerticalFlip(), T.RandomRotation((0, 180)), T.ToTensor(),
                                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
            else:
                tf = T.Compose([T.Resize(256), T.CenterCrop(256), T.RandomCrop(size), T.ToTensor(),
                                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
            dl = torch.utils.data.DataLoader(PerItem(paths, tf), batch_size=args.batch_size, shuffle=True, num_workers=2)
            t = time.perf_counter()
            seen = 0
            while seen < n_images:
                for xb in dl:
                    xb = xb.to(device)
                    seen += len(xb)
                    if seen >= n_images:
                        break
            if device.type == "cuda":
                torch.cuda.synchronize()
            base = seen / (time.perf_counter() - t)
            print(f"{name}: baseline per-item PIL + torchvision (2 workers) {base:.0f} images/s; "
                  f"pbn cache + batched augmentation {ours:.0f} images/s; ratio {ours / base:.1f}x")
            del views


if __name__ == "__main__":
    main()
