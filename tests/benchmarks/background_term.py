"""The background term r(q, not a) of attribution: `_background_term` (every query at once) against a loop over the
queries, the simple baseline, timed in the same run at the shapes eval scores (a use episode's 1,000 queries against
old masters' 1,707 training paintings of 74 hands, and against the background's cap of 4,096 paintings of 1,584
hands, Kaggle's training artists).

    .venv/bin/python tests/benchmarks/background_term.py [--repeats 5]

Prints the median time of each, their ratio, and the largest difference between their terms (none expected beyond
rounding).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pbn_cli.answers.attribution import BACKGROUND_K, _background_term
from _common import machine


def loop(sims: np.ndarray, pool_artists: np.ndarray, names: np.ndarray, k: int) -> np.ndarray:
    """The baseline: one query at a time, the hands among its k nearest recomputed one by one."""
    out = np.zeros((len(sims), len(names)))
    take = min(sims.shape[1], k + 64)
    near = np.argsort(-sims, axis=1)[:, :take]
    for i, row in enumerate(near):
        s, who = sims[i, row], pool_artists[row]
        finite = np.isfinite(s)
        out[i] = s[finite][:k].mean() if finite.any() else 0.0
        for j in np.flatnonzero(np.isin(names, who[:k])):
            others = s[(who != names[j]) & finite][:k]
            out[i, j] = others.mean() if len(others) else 0.0
    return out


def timed(f, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    a = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"# The background term ({machine()}), median of {a.repeats}\n")
    print("| queries x background paintings (hands) | loop over queries | every query at once | ratio | largest "
          "difference |\n| --- | --- | --- | --- | --- |")
    for queries, paintings, hands in ((1000, 1707, 74), (1000, 4096, 1584)):
        pool = np.array([f"h{x}" for x in rng.integers(0, hands, paintings)])
        names = np.unique(pool)
        sims = rng.normal(0.0, 0.1, (queries, paintings)).astype(np.float32)
        sims[np.arange(queries), rng.integers(0, paintings, queries)] = -np.inf  # each query's own painting
        t_loop, r_loop = timed(lambda: loop(sims, pool, names, BACKGROUND_K), a.repeats)
        t_new, r_new = timed(lambda: _background_term(sims, pool, names, BACKGROUND_K), a.repeats)
        print(f"| {queries} x {paintings} ({hands}) | {t_loop:.3f} s | {t_new:.3f} s | {t_loop / t_new:.1f}x | "
              f"{np.abs(r_loop - r_new).max():.1e} |", flush=True)


if __name__ == "__main__":
    main()
