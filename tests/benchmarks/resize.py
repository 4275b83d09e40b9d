"""Resize speed on 3000x2200 JPEGs, against a one-process plain PIL loop; PSNR against it.

Usage: python tests/benchmarks/resize.py [N]
"""

from __future__ import annotations

import csv
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, timer  # noqa: E402

from pbn_cli.core.workspace import Workspace  # noqa: E402
from pbn_cli.data.synth import make_hand, paint  # noqa: E402
from pbn_cli.stages.clean import clean  # noqa: E402
from pbn_cli.stages.ingest import ingest  # noqa: E402
from pbn_cli.stages.resize import resize  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def main(n: int = 48) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        (data / "train").mkdir()
        rows = []
        for k in range(n):
            hand = make_hand(np.random.default_rng(k % 8))
            im = paint(hand, 750, 550, np.random.default_rng(k)).resize((3000, 2200), Image.Resampling.BICUBIC)
            im.save(data / "train" / f"{k}.jpg", quality=90)
            rows.append({"filename": f"{k}.jpg", "artist": f"artist {k % 8}"})
        with open(data / "train_info.csv", "w", newline="") as f:
            w = csv.DictWriter(f, ["filename", "artist"])
            w.writeheader()
            w.writerows(rows)
        t: dict = {}
        plain = []
        with timer("baseline", t):
            for r in rows:
                im = Image.open(data / "train" / r["filename"]).convert("RGB")
                plain.append(np.asarray(ImageOps.fit(im, (256, 256), Image.Resampling.LANCZOS)))
        ws = Workspace(data / "ws")
        ingest(ws, data / "train_info.csv")
        clean(ws)
        with timer("pbn", t):
            resize(ws)
        import pandas as pd

        m = pd.read_parquet(ws.manifest("resize")).set_index("image_id")
        cache = np.load(ws.cache / "images_256.npy", mmap_mode="r")
        scores = [psnr(cache[m.loc[r["filename"], "cache_row"]], p) for r, p in zip(rows, plain)]
        print(f"machine: {machine()}")
        print(f"paintings: {n} JPEGs of 3000x2200")
        print(f"baseline one-process Image.open().convert('RGB') + ImageOps.fit LANCZOS: {n / t['baseline']:.1f} paintings/s")
        print(f"pbn resize (draft decode, all cores, cache + manifest + preview): {n / t['pbn']:.1f} paintings/s")
        print(f"ratio pbn / baseline: {t['baseline'] / t['pbn']:.2f}x")
        print(f"PSNR vs baseline: min {min(scores):.1f} dB, mean {np.mean(scores):.1f} dB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 48)
