"""Search at a million paintings: pbn's exact search in chunks against its FAISS index, on clustered vectors.

    python tests/benchmarks/index.py [--rows 1000000] [--dim 768] [--clusters 3000] [--queries 100]

The vectors stand in for embeddings: unit vectors around ``--clusters``
Gaussian centres whose spreads overlap (each cluster its own spread), tuned
so that a vector's exact nearest neighbour shares its cluster about as
often as a painting's shares its artist in pbn's real figures (P@1 0.5-0.7;
the script tunes the spread and prints the P@1 it reached). Uniform random
vectors would have no neighbours worth finding, and well-separated clusters
would make any index's recall a trivial 1.0.

Each method runs in a fresh process (so that its peak memory, the
process's VmHWM, is its own), on the same seeded vectors made in chunks
straight into one float32 array: exact search (``inference/search.exact_nearest``:
float32 products in chunks of 65,536 rows) and the FAISS index
(``inference/index.build``: IVF + 8-bit scalar quantisation, nprobe tuned
to recall@10 >= 0.95, exact re-ranking of its candidates). Query latency is
one painting at a time (what `pbn search` does), p50 and p99 over
``--queries`` queries; recall@10 of FAISS against exact search over the
same queries. Also exact search over 100k and 250k rows, to place the
size above which `--index auto` chooses FAISS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def vectors(rows: int, dim: int, clusters: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded clustered unit vectors (float32, made in chunks into one array) and their clusters.

    Like real embeddings, their variance is spread unevenly over the dimensions (the k-th of a random basis
    holds a share proportional to 1/k, as the principal components of pbn's embeddings fall off), centres
    and spreads alike; each cluster has a spread of its own (tight hands and loose ones)."""
    rng = np.random.default_rng(seed)
    scale = (1 / np.sqrt(np.arange(1, dim + 1))).astype(np.float32)
    scale *= np.sqrt(dim / (scale**2).sum())
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32) * scale / np.sqrt(dim)
    spreads = (spread * rng.uniform(0.6, 1.4, clusters)).astype(np.float32)
    labels = rng.integers(clusters, size=rows)
    out = np.empty((rows, dim), np.float32)
    for start in range(0, rows, 16_384):
        lab = labels[start : start + 16_384]
        x = rng.standard_normal((len(lab), dim), dtype=np.float32)
        x *= spreads[lab, None] * scale / np.sqrt(dim)
        x += centres[lab]
        x = x @ basis
        out[start : start + len(lab)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, labels


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def gallery(emb: np.ndarray):
    import pandas as pd

    from pbn_cli.inference.search import Gallery

    ids = np.char.add("p", np.arange(len(emb)).astype(str))
    return Gallery(pd.DataFrame({"image_id": ids, "digest": ids}), emb)


def latencies(finder, g, queries: np.ndarray, k: int = 10) -> tuple[list[float], np.ndarray]:
    times, found = [], []
    for q in queries:
        t = time.perf_counter()
        idx, _ = finder(g, q[None], k)
        times.append(time.perf_counter() - t)
        found.append(idx[0])
    return times, np.array(found)


def run_method(method: str, args) -> dict:
    """One method in this process: build, query one at a time, memory."""
    from pbn_cli.inference import index
    from pbn_cli.inference.search import exact_nearest
    from pbn_cli.model.store import Store

    base = peak_mb()
    t0 = time.perf_counter()
    emb, _ = vectors(args.rows, args.dim, args.clusters, args.spread)
    made = time.perf_counter() - t0
    g = gallery(emb)
    rng = np.random.default_rng(7)
    queries = emb[rng.choice(len(emb), args.queries, replace=False)] + 0.02 * rng.normal(size=(args.queries, args.dim)).astype(np.float32) / np.sqrt(args.dim)
    out = {"method": method, "rows": args.rows, "dim": args.dim, "vectors_mb": emb.nbytes / 2**20, "made_s": made}
    if method == "exact":
        _ = g.squared_norms  # computed once per gallery, as a search process does
        times, found = latencies(exact_nearest, g, queries)
        out["build_s"] = 0.0
    else:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp))
            ids = np.arange(len(emb), dtype=np.int64)
            t = time.perf_counter()
            finder = index.build(g, store, ids)
            out["build_s"] = time.perf_counter() - t
            out.update(nprobe=finder.nprobe, cells=finder.about["cells"], tuned_recall=finder.about["recall_at_10"],
                       index_mb=(Path(tmp) / "index.faiss").stat().st_size / 2**20)
            times, found = latencies(finder, g, queries)
    out.update(p50_ms=1000 * float(np.percentile(times, 50)), p99_ms=1000 * float(np.percentile(times, 99)),
               peak_mb=peak_mb(), start_mb=base, found=found.tolist())
    return out


def tune_spread(args) -> tuple[float, float]:
    """The spread whose exact P@1 (nearest other vector in the same cluster) lands in 0.5-0.7, by bisection."""
    from pbn_cli.inference.search import exact_nearest

    lo, hi = 0.5, 8.0
    for _ in range(8):
        spread = (lo + hi) / 2
        emb, labels = vectors(args.rows, args.dim, args.clusters, spread)
        pick = np.random.default_rng(3).choice(len(emb), 300, replace=False)
        idx, _ = exact_nearest(gallery(emb), emb[pick], 2)
        p1 = float(np.mean(labels[idx[:, 1]] == labels[pick]))
        del emb
        print(f"spread {spread:.3f}: P@1 {p1:.3f}", flush=True)
        if 0.55 <= p1 <= 0.65:
            return spread, p1
        lo, hi = (spread, hi) if p1 > 0.65 else (lo, spread)
    return spread, p1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--clusters", type=int, default=3000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--spread", type=float, default=None)
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="100000,250000")
    args = ap.parse_args()
    if args.method:
        print(json.dumps(run_method(args.method, args)))
        return
    p1 = None
    if args.spread is None:
        args.spread, p1 = tune_spread(args)

    def child(method: str, rows: int) -> dict:
        cmd = [sys.executable, __file__, "--method", method, "--rows", str(rows), "--dim", str(args.dim),
               "--clusters", str(args.clusters), "--queries", str(args.queries), "--spread", str(args.spread)]
        env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
        return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout.splitlines()[-1])

    exact, faiss = child("exact", args.rows), child("faiss", args.rows)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact["found"], faiss["found"])])
    smaller = [child("exact", int(n)) for n in args.sizes.split(",") if n]
    print(f"\n{args.rows:,} clustered unit vectors of {args.dim} dimensions ({args.clusters} clusters, spread "
          f"{args.spread:.3f}{f', exact P@1 {p1:.3f}' if p1 is not None else ''}); {exact['vectors_mb']:,.0f} MB in "
          f"float32; queries one at a time\n")
    print("| method | build | peak memory (process) | added to the process's start | × the vectors | query p50 | "
          "query p99 | recall@10 against exact |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r, rec in [(exact, "1 (itself)"), (faiss, f"{recall:.3f}"), *[(x, "1") for x in smaller]]:
        name = r["method"] if r["rows"] == args.rows else f"exact, {r['rows']:,} rows"
        extra = f" (IVF {r['cells']} cells, nprobe {r['nprobe']}, index {r['index_mb']:.0f} MB)" if r["method"] == "faiss" else ""
        added = r["peak_mb"] - r["start_mb"]
        print(f"| {name}{extra} | {r['build_s']:.1f} s | {r['peak_mb']:,.0f} MB | {added:,.0f} MB | "
              f"{added / r['vectors_mb']:.2f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {rec} |")


if __name__ == "__main__":
    main()
