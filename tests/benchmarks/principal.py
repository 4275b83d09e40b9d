"""The principal directions every whitening of attribution is made from: `principal` against an SVD, the simple
baseline, timed in the same run on embeddings of real shape (3,424 dimensions: the cpu preset's) at the sizes
eval fits on (old masters' 1,707 training paintings; the background's cap of 4,096).

    .venv/bin/python tests/benchmarks/principal.py [--repeats 3]

Prints the median time of each, their ratio, and the largest difference between their variances and whitened
directions (none expected beyond rounding).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pbn_cli.answers.attribution import BACKGROUND_MAX, COMPONENTS, principal
from _common import machine


def svd_basis(x: np.ndarray, components: int = COMPONENTS):
    """The baseline: the thin SVD of the centred paintings."""
    x = np.asarray(x, np.float64)
    mean = x.mean(0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    lam = sv**2 / (len(x) - 1)
    keep = min(components, int((lam > lam[0] * 1e-8).sum()))
    return mean, vt[:keep], lam[:keep]


def timed(f, x, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = f(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dim", type=int, default=3424)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    rng = np.random.default_rng(0)
    for n in (1707, BACKGROUND_MAX):
        x = (rng.normal(size=(n, 64)) @ rng.normal(size=(64, args.dim)) + rng.normal(size=(n, args.dim)) * 0.3)
        x = x.astype(np.float32)
        base, (_, vt0, lam0) = timed(svd_basis, x, args.repeats)
        mine, (_, vt1, lam1) = timed(principal, x, args.repeats)
        cos = np.abs((vt0 * vt1).sum(1))[:64]  # the 64 directions of the signal (the noise's are not unique)
        print(f"{n} x {args.dim}: SVD {base:.2f} s, principal {mine:.2f} s, ratio {mine / base:.2f}; "
              f"largest relative variance difference {np.max(np.abs(lam1 / lam0 - 1)):.1e}, "
              f"smallest |cos| between their 64 leading directions {cos.min():.6f}")


if __name__ == "__main__":
    main()
