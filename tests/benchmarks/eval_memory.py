"""Metrics of Kaggle's test size from stored embeddings: peak memory and time.

23,817 paintings with 2048-d float32 embeddings (random, with artist
structure) are written to an embeddings.parquet, then read back and scored
by pbn's eval metrics (20,000 triplets, pair AUC over 14 groups, P@1,
MAP@R, verification, 200 bootstrap replicates) in a fresh process, whose
peak RSS is reported. Baseline for scale: the memory the embeddings
themselves take, and a one-shot full distance matrix (what a naive
implementation would allocate).

Usage: python tests/benchmarks/eval_memory.py [N] [DIM]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SCORE = """
def peak_kb():  # VmHWM: an exec resets it, unlike ru_maxrss
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
import sys, time, json
import numpy as np, pandas as pd
from pbn_cli.evaluation.scores import compute_metrics
t = time.perf_counter()
frame = pd.read_parquet(sys.argv[1])
emb = np.stack(frame["embedding"].to_numpy()).astype(np.float32)
loaded = time.perf_counter() - t
m = compute_metrics(emb, frame["artist"].to_numpy(), 0, 20000, 1800)
print(json.dumps({"seconds": time.perf_counter() - t, "load_seconds": loaded,
                  "peak_rss_gb": peak_kb() / 2**20,
                  "n_pairs": m["n_pairs"], "n_groups": m["n_groups"], "pair_auc": m["pair_auc"]}))
"""


def main(n: int = 23_817, dim: int = 2048) -> None:
    rng = np.random.default_rng(0)
    sizes = np.clip(rng.zipf(1.6, 2000), 1, 500)
    artists = np.repeat(np.arange(len(sizes)), sizes)[:n]
    centres = rng.normal(0, 1, (artists.max() + 1, dim)).astype(np.float32)
    emb = centres[artists] + rng.normal(0, 4.0, (len(artists), dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embeddings.parquet"
        pd.DataFrame({"image_id": np.arange(len(emb)).astype(str), "artist": [f"artist {a}" for a in artists],
                      "embedding": list(emb)}).to_parquet(path)
        del emb
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", SCORE, str(path)], capture_output=True, text=True, check=True)
        print(out.stdout.strip())
    print(f"paintings: {n}, dim {dim}, artists: {artists.max() + 1}")
    print(f"embeddings alone: {n * dim * 4 / 2**30:.2f} GiB float32; a naive full distance matrix: {n * n * 8 / 2**30:.1f} GiB float64")
    print(f"wall time including process start: {time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
