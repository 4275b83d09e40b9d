"""Distances of many pairs of paintings (eval's 20,000 triplets, its calibration pairs): `pair_distances`, a block of
pairs at a time, against every pair's rows gathered at once, the simple baseline, on embeddings of real shape
(3,424 dimensions: the cpu preset's; old masters' 505 test paintings).

    .venv/bin/python tests/benchmarks/pair_distances.py [--repeats 5]

Eval computes them once per process, so each timing is a fresh process's first call (`--one`): the gigabytes the
baseline gathers are then new memory the system must map, which a loop of calls in one process would hide. Prints
the median time of each, their ratio, and whether the distances are identical (they must be, bit for bit).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import numpy as np

from pbn_cli.answers.metrics import pair_distances, row_distances
from _common import machine

PAINTINGS, DIM = 505, 3424


def one(way: str, triplets: int) -> None:
    """In this process: one computation of the triplets' two distances, its seconds and a checksum printed."""
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(PAINTINGS, DIM)).astype(np.float32)
    a, p, n = (rng.integers(0, PAINTINGS, triplets) for _ in range(3))
    t = time.perf_counter()
    if way == "gathered":
        d = (row_distances(emb[a], emb[p]), row_distances(emb[a], emb[n]))
    else:
        d = (pair_distances(emb, a, p), pair_distances(emb, a, n))
    print(time.perf_counter() - t, float(np.concatenate(d).sum()).hex())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", choices=["gathered", "block"])
    parser.add_argument("--triplets", type=int, default=20_000)
    a = parser.parse_args()
    if a.one:
        return one(a.one, a.triplets)
    print(f"# Pair distances ({machine()}), median of {a.repeats} fresh processes\n")
    print("| triplets | all rows gathered at once | a block at a time | ratio | identical |\n| --- | --- | --- | --- | --- |")
    for triplets in (20_000, 40_000):
        runs = {way: [subprocess.run([sys.executable, __file__, "--one", way, "--triplets", str(triplets)], check=True,
                                     capture_output=True, text=True).stdout.split() for _ in range(a.repeats)]
                for way in ("gathered", "block")}
        t = {way: float(np.median([float(r[0]) for r in rs])) for way, rs in runs.items()}
        same = len({r[1] for rs in runs.values() for r in rs}) == 1
        print(f"| {triplets:,} | {t['gathered']:.2f} s | {t['block']:.2f} s | {t['gathered'] / t['block']:.1f}x | {same} |",
              flush=True)


if __name__ == "__main__":
    main()
