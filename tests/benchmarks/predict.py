"""predict's scoring speed and memory, and its agreement with eval.

Throughput (default): a Kaggle-shaped submission_info.csv (groups of 1,840
images, all pairs within a group, in random order within the group; 23,817
distinct images) with random 2048-d embeddings, so no model is needed. pbn's
path (stream the CSV, score, write index,sameArtist) runs in a fresh process
whose peak RSS is reported. Baseline: a plain per-pair loop (csv module,
numpy distance of two gathered rows, sigmoid, csv writer) timed on the first
200,000 pairs.

Agreement (--workspace WS): writes a submission_info.csv with PAIRS pairs
over WS's test paintings (every pair once, then repeats reversed to reach
the count), runs `pbn predict` on it with WS's latest run, and compares the
AUC of the written probabilities on the known labels with eval's pair_auc.

Usage:
  python tests/benchmarks/predict.py [PAIRS]              # default 3,000,000; Kaggle: 21,916,047
  python tests/benchmarks/predict.py --workspace WS [PAIRS]
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FAST = """
def peak_kb():  # VmHWM: an exec resets it, unlike ru_maxrss
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1])
import json, sys, time
import numpy as np
from pbn_cli.inference.pairs import read_pairs, write_probabilities
t0 = time.perf_counter()
pairs = read_pairs(sys.argv[1])
t1 = time.perf_counter()
names = {n: i for i, n in enumerate(np.load(sys.argv[2] + ".names.npy", allow_pickle=False))}
emb = np.load(sys.argv[2])[[names[n] for n in pairs.names]]
t2 = time.perf_counter()
write_probabilities(pairs, emb, np.zeros(len(emb), bool), 4.0, -2.0, sys.argv[3])
t3 = time.perf_counter()
print(json.dumps({"read": t1 - t0, "score_write": t3 - t2, "rows": len(pairs),
                  "peak_rss_gb": peak_kb() / 2**20}))
"""


def kaggle_like(path: Path, n_pairs: int, n_images: int = 23_817, group: int = 1840, seed: int = 0) -> list[str]:
    """Write index,image1,image2 rows group by group; returns the names of the images they use."""
    rng = np.random.default_rng(seed)
    names = np.array([f"{i}.jpg" for i in rng.permutation(110_000)[:n_images]])
    written, start, used = 0, 0, 0
    with open(path, "w") as f:
        f.write("index,image1,image2\n")
        while written < n_pairs:
            members = names[start : start + group]
            start = (start + group) % n_images
            i, j = np.triu_indices(len(members), 1)
            take = rng.permutation(len(i))[: n_pairs - written]
            swap = rng.random(len(take)) < 0.5
            a = np.where(swap, i[take], j[take])
            b = np.where(swap, j[take], i[take])
            f.writelines(f"{written + k},{members[x]},{members[y]}\n" for k, (x, y) in enumerate(zip(a, b)))
            written += len(take)
            used = min(n_images, used + len(members))
    return list(names[:used])


def naive(pairs_csv: Path, emb: np.ndarray, names: dict, out: Path, limit: int) -> float:
    t = time.perf_counter()
    with open(pairs_csv) as f, open(out, "w", newline="") as g:
        rows = csv.reader(f)
        writer = csv.writer(g)
        next(rows)
        writer.writerow(["index", "sameArtist"])
        for k, (index, a, b) in enumerate(rows):
            if k == limit:
                break
            d = float(np.linalg.norm(emb[names[a]] - emb[names[b]]))
            writer.writerow([index, 1 / (1 + math.exp(4.0 * d - 2.0))])
    return limit / (time.perf_counter() - t)


def throughput(n_pairs: int, keep: Path | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs_csv = tmp / "submission_info.csv"
        t = time.perf_counter()
        names = kaggle_like(pairs_csv, n_pairs)
        print(f"wrote {n_pairs:,} pairs over {len(names):,} images in {time.perf_counter() - t:.0f} s "
              f"({pairs_csv.stat().st_size / 2**20:.0f} MiB)")
        if keep:
            shutil.copy(pairs_csv, keep)
        rng = np.random.default_rng(1)
        emb = rng.standard_normal((len(names), 2048)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        np.save(tmp / "emb.npy", emb)
        np.save(tmp / "emb.npy.names.npy", np.array(names))
        base = naive(pairs_csv, emb, {n: i for i, n in enumerate(names)}, tmp / "naive.csv", 200_000)
        print(f"baseline (per-pair loop, first 200,000 pairs): {base:,.0f} pairs/s")
        proc = subprocess.run([sys.executable, "-c", FAST, str(pairs_csv), str(tmp / "emb.npy"), str(tmp / "out.csv")],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout)
        total = r["read"] + r["score_write"]
        print(f"pbn: read {r['read']:.1f} s, score and write {r['score_write']:.1f} s -> "
              f"{r['rows'] / total / 1e6:.2f} M pairs/s ({r['rows'] / total / base:.0f}x the baseline); "
              f"peak RSS {r['peak_rss_gb']:.2f} GB")
        with open(tmp / "out.csv") as f, open(tmp / "naive.csv") as g:
            next(f), next(g)
            ours = [float(line.split(",")[1]) for _, line in zip(range(200_000), f)]
            theirs = [float(line.split(",")[1]) for _, line in zip(range(200_000), g)]
        print(f"largest difference from the baseline's probabilities: {np.abs(np.subtract(ours, theirs)).max():.2e}")


def agreement(ws: Path, n_pairs: int) -> None:
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from pbn_cli.core.runs import latest_run
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.data.paths import image_root

    run = latest_run(Workspace(ws))
    metrics = json.loads((run.folder / "eval/test/metrics.json").read_text())
    split = pd.read_parquet(ws / "manifests/split.parquet")
    root = image_root(Workspace(ws))
    test = split[split["split"] == "test"].reset_index(drop=True)
    i, j = np.triu_indices(len(test), 1)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(i))
    i, j = i[order][:n_pairs], j[order][:n_pairs]
    if len(i) < n_pairs:  # every pair once, then repeats the other way round
        extra = rng.integers(0, len(i), n_pairs - len(i))
        i, j = np.r_[i, j[extra]], np.r_[j, i[extra]]
    names = test["path"].to_numpy()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pairs_csv = tmp / "submission_info.csv"
        pd.DataFrame({"index": np.arange(n_pairs), "image1": names[i], "image2": names[j]}).to_csv(pairs_csv, index=False)
        out = tmp / "submission.csv"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pbn_cli", "predict", str(pairs_csv), "--images", root,
                               "-o", str(out), "-w", str(ws), "--run", run.name],
                              capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode:
            sys.exit(proc.stderr[-2000:])
        print(proc.stdout.strip())
        sub = pd.read_csv(out)
        assert list(sub.columns) == ["index", "sameArtist"] and (sub["index"].to_numpy() == np.arange(n_pairs)).all()
        assert sub["sameArtist"].between(0, 1).all()
        artists = test["artist"].to_numpy()
        auc = roc_auc_score(artists[i] == artists[j], sub["sameArtist"])
        print(f"{n_pairs:,} pairs over {len(test):,} test paintings ({(artists[i] == artists[j]).sum():,} same-artist); "
              f"wall {wall:.0f} s; AUC of the submission {auc:.4f} vs eval pair_auc {metrics['pair_auc']:.4f} "
              f"(difference {abs(auc - metrics['pair_auc']):.4f})")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--workspace"]:
        agreement(Path(args[1]), int(args[2]) if len(args) > 2 else 3_000_000)
    else:
        throughput(int(args[0]) if args else 3_000_000)
