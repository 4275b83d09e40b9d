"""Synth speed at default sizes (300-1600 px), against the same generator in one process.

Usage: python tests/benchmarks/synth.py [ARTISTS]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, timer  # noqa: E402

from pbn_cli.data.synth import synth  # noqa: E402


def main(artists: int = 20) -> None:
    t: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        with timer("one", t):
            a = synth(Path(tmp) / "a", artists=artists, paintings=10, workers=1)
        with timer("all", t):
            synth(Path(tmp) / "b", artists=artists, paintings=10)
    n = a["paintings"]
    print(f"machine: {machine()}")
    print(f"paintings: {n} at 300-1600 px (80% JPEG, 20% PNG)")
    print(f"one process: {n / t['one']:.1f} paintings/s")
    print(f"pbn synth (all cores): {n / t['all']:.1f} paintings/s ({t['one'] / t['all']:.2f}x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
