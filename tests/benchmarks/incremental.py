"""Adding paintings to a workspace: `pbn search` embeds only the new ones, against embedding everything again.

    python tests/benchmarks/incremental.py --workspace WS --run RUN --csv train_info.csv [--share 0.01]

Works on a copy of WS (a trained, evaluated run) that first ingests the
CSV without a seeded ``--share`` of its paintings, and fills the run's
embedding store anew (the copy's is deleted) with one `pbn search`. Then the rest are ingested (ingest,
clean, split, resize: the cache grows by those rows) and `pbn search` runs
again: it embeds only the new paintings (its progress line says how many).
The baseline: the same search with the store deleted, which embeds every
painting. Each time is a whole `pbn search` process (start-up, model, store,
the query); a search with nothing new is timed too.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from _common import machine


def pbn(*args) -> tuple[float, str]:
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "pbn_cli", *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return time.monotonic() - t, out.stdout + out.stderr


def embedded(output: str) -> int:
    found = re.findall(r"embedding ([\d,]+) of [\d,]+ paintings with the run's network", output)
    return sum(int(n.replace(",", "")) for n in found)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--images", default=None)
    ap.add_argument("--share", type=float, default=0.01)
    args = ap.parse_args()
    csv = Path(args.csv).resolve()
    images = Path(args.images).resolve() if args.images else csv.parent / "train"
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        shutil.copytree(args.workspace, ws)
        rows = pd.read_csv(csv, dtype=str, keep_default_na=False)
        held = rows.sample(frac=args.share, random_state=0)
        fewer = Path(tmp) / "fewer.csv"
        rows.drop(held.index).to_csv(fewer, index=False)
        w = ["-w", ws]
        query = images / held["filename"].iloc[0]
        for stage in (["ingest", fewer, "--images", images], ["clean"], ["split"], ["resize"]):
            pbn(*stage, *w)
        shutil.rmtree(ws / "embeddings", ignore_errors=True)  # WS's store holds the held paintings already
        first, out = pbn("search", query, "--run", args.run, *w)
        for stage in (["ingest", csv, "--images", images], ["clean"], ["split"], ["resize"]):
            pbn(*stage, *w)
        grown, out_grown = pbn("search", query, "--run", args.run, *w)
        again, out_again = pbn("search", query, "--run", args.run, *w)
        shutil.rmtree(ws / "embeddings")  # the run's store and its copy's: all a search recomputed before
        rebuild, out_rebuild = pbn("search", query, "--run", args.run, *w)
    total = len(rows)
    print(f"\n{total:,} paintings, {len(held)} ({args.share:.0%}) ingested after the store was filled; run {args.run}; "
          f"{machine()}\n")
    print("| `pbn search` after | paintings embedded | seconds (whole command) |")
    print("| --- | --- | --- |")
    print(f"| adding {len(held)} paintings (ingest, clean, split, resize) | {embedded(out_grown)} | {grown:.1f} |")
    print(f"| nothing new | {embedded(out_again)} | {again:.1f} |")
    print(f"| the store deleted (a rebuild, what every new painting cost before) | {embedded(out_rebuild)} | {rebuild:.1f} |")
    print(f"\n(the first fill of the store after the 99% ingest: {embedded(out)} paintings, {first:.1f} s)")


if __name__ == "__main__":
    main()
