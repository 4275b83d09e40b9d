"""Ingest from a Parquet table with the images inside, against the CSV path on the same images.

Makes 10,000 small paintings with `pbn synth` (100 artists x 100, 64-128 px),
then the same images as a Parquet table written by Hugging Face `datasets`
(an Image column, the artist a ClassLabel, title/style/genre/date as text).
Times whole `pbn ingest` processes, each in a fresh workspace, the two paths
in turn (CSV, table, CSV, table...):

- CSV + image folder: reads each image's header only;
- table: reads every image's bytes and writes each one out (atomically, fsync'd)
  into the workspace's images/ folder, so it is doing more work by design;
- table again, up to date: the check alone;
- table with --force, images already extracted: reads the bytes and each
  file's header, writes nothing (what a resumed ingest costs).

Usage: python tests/benchmarks/ingest_table.py [--artists 100] [--paintings 100] [--runs 5] [--dir DIR]
Needs `pip install datasets`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

PBN = [sys.executable, "-m", "pbn_cli"]


def _run(args: list, ok: str = "") -> float:
    """Seconds one whole `pbn` process takes; it must exit 0 (and print ``ok``)."""
    start = time.perf_counter()
    out = subprocess.run([*PBN, *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    took = time.perf_counter() - start
    if out.returncode != 0 or ok not in out.stdout:
        raise SystemExit(f"pbn {' '.join(map(str, args))} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return took


def make_table(data: Path, table: Path) -> int:
    """The synthetic set's images and CSV columns as a Parquet table written by `datasets`."""
    import pandas as pd
    from datasets import ClassLabel, Dataset, Features, Value
    from datasets import Image as ImageFeature

    frame = pd.read_csv(data / "train_info.csv", dtype=str, keep_default_na=False)
    names = sorted(set(frame["artist"]))
    others = [c for c in frame.columns if c not in ("filename", "artist")]
    features = Features({"image": ImageFeature(), "artist": ClassLabel(names=names),
                         **{c: Value("string") for c in others}})
    columns = {"image": [{"bytes": (data / "train" / f).read_bytes(), "path": f} for f in frame["filename"]],
               "artist": list(frame["artist"]), **{c: list(frame[c]) for c in others}}
    Dataset.from_dict(columns, features=features).to_parquet(str(table))
    return len(frame)


def _row(name: str, times: list[float], n: int, baseline: float | None) -> str:
    med = statistics.median(times)
    ratio = f"{med / baseline:.2f}x" if baseline else "1.00x"
    return f"| {name} | {len(times)} | {min(times):.2f} | {med:.2f} | {n / med:,.0f} | {ratio} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--artists", type=int, default=100)
    ap.add_argument("--paintings", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", type=Path, default=None, help="Work here (default: a temp folder).")
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pbn-ingest-table-", dir=opts.dir))
    try:
        data, table = tmp / "data", tmp / "paintings.parquet"
        t0 = time.perf_counter()
        _run(["synth", data, "--artists", opts.artists, "--paintings", opts.paintings, "--min-size", 64,
              "--max-size", 128])
        t1 = time.perf_counter()
        n = make_table(data, table)
        t2 = time.perf_counter()
        times: dict[str, list[float]] = {"csv": [], "table": [], "again": [], "force": []}
        for k in range(opts.runs):
            times["csv"].append(_run(["ingest", data / "train_info.csv", "-w", tmp / f"ws_csv{k}"], f"kept {n} rows"))
            ws = tmp / f"ws_table{k}"
            times["table"].append(_run(["ingest", table, "-w", ws], f"kept {n} rows"))
            times["again"].append(_run(["ingest", table, "-w", ws], "up to date"))
            times["force"].append(_run(["ingest", table, "-w", ws, "--force"], f"kept {n} rows"))
            shutil.rmtree(tmp / f"ws_csv{k}")
            if k:
                shutil.rmtree(ws)
        size = sum(p.stat().st_size for p in (tmp / "ws_table0/images").rglob("*") if p.is_file())
        print(f"machine: {machine()}")
        print(f"paintings: {n} by {opts.artists} artists, {size / 1e6:.0f} MB of images (synth {t1 - t0:.1f} s, "
              f"table written by datasets in {t2 - t1:.1f} s, {table.stat().st_size / 1e6:.0f} MB)")
        print("whole `pbn ingest` processes, each in a fresh workspace, CSV and table runs in turn\n")
        print("| ingest from | runs | min s | median s | paintings/s (median) | time vs CSV |")
        print("| --- | --- | --- | --- | --- | --- |")
        base = statistics.median(times["csv"])
        print(_row("CSV + image folder (headers only)", times["csv"], n, None))
        print(_row("Parquet table (every image read and written out)", times["table"], n, base))
        print(_row("Parquet table again (up to date)", times["again"], n, base))
        print(_row("Parquet table --force, images already there (none written)", times["force"], n, base))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
