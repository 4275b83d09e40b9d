"""Ingest speed: header reads of 10,000 small paintings, against a one-process Pillow loop.

Usage: python tests/benchmarks/ingest.py [N]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, timer  # noqa: E402

from pbn_cli.core.workspace import Workspace  # noqa: E402
from pbn_cli.data.synth import synth  # noqa: E402
from pbn_cli.stages.ingest import ingest  # noqa: E402


def main(n: int = 10_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        artists = n // 20
        t: dict = {}
        with timer("synth", t):
            synth(data, artists=artists, paintings=20, seed=0, min_size=64, max_size=128)
        names = sorted(os.listdir(data / "train"))
        with timer("baseline", t):  # plain loop: open each header with Pillow
            for name in names:
                with Image.open(data / "train" / name) as im:
                    _ = (im.format, im.size, im.mode, os.path.getsize(data / "train" / name))
        with timer("pbn", t):
            result = ingest(Workspace(Path(tmp) / "ws"), data / "train_info.csv")
        assert result.kept == len(names)
        print(f"machine: {machine()}")
        print(f"paintings: {len(names)} (synth took {t['synth']:.1f} s)")
        print(f"baseline one-process Pillow header loop: {len(names) / t['baseline']:,.0f} paintings/s")
        print(f"pbn ingest (CSV parse, headers on all cores, manifests written): {len(names) / t['pbn']:,.0f} paintings/s")
        print(f"ratio pbn / baseline: {t['baseline'] / t['pbn']:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
