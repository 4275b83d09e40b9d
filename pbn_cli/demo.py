"""`pbn demo`: the whole pipeline on a synthetic painting set, in a few minutes on a laptop.

Each step calls the same command a user would type, so its output is the
output they will see; the commands are printed before they run. Re-running
the demo in the same folder skips what is done (and resumes a killed
training run).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path


from pbn_cli import console


def _step(n: int, total: int, text: str) -> None:
    console.out.print(f"\n[bold cyan]── {n}/{total} {text}[/]", highlight=False)


def _pick_paintings(ws: Path) -> tuple[Path, Path, Path]:
    """Two test paintings by one unseen artist and one by another: (a, same, other)."""
    from pbn_cli.manifest import read_manifest
    from pbn_cli.paths import image_root
    from pbn_cli.workspace import Workspace

    split, record = read_manifest(Workspace(ws).manifest("split"))
    root = Path(image_root(record))
    pool = split[split["split"] == "test"].sort_values("image_id")
    if pool["artist"].nunique() < 2:  # a tiny demo may hold out a single artist
        pool = split.sort_values("image_id")
    artists = pool["artist"].drop_duplicates().tolist()
    first = pool[pool["artist"] == artists[0]]["path"].tolist()
    other = pool[pool["artist"] == artists[1]]["path"].tolist()
    return root / first[0], root / first[1], root / other[0]


def demo(folder: Path, artists: int, paintings: int, epochs: int, device: str, seed: int) -> None:
    from pbn_cli import cli
    from pbn_cli.errors import InputError

    if artists < 6 or paintings < 3 or epochs < 1:
        raise InputError("the demo needs --artists >= 6, --paintings >= 3 and --epochs >= 1")
    start = time.monotonic()
    data, ws = folder / "data", folder / "workspace"
    total = 9
    common = dict(workspace=ws, force=False)
    _step(1, total, f"pbn synth {data} --artists {artists} --paintings {paintings}: a synthetic set in Kaggle's layout")
    if (data / "train_info.csv").exists():
        console.out.print(f"synth: {data / 'train_info.csv'} exists, reusing it")
    else:
        cli.synth(out=data, artists=artists, paintings=paintings, seed=seed, quirks=False, min_size=256,
                  max_size=720, workers=None)
    _step(2, total, f"pbn ingest {data / 'train_info.csv'} -w {ws}: the CSV and every image's header")
    cli.ingest(csv=data / "train_info.csv", images=None, filename_column=None, artist_column=None, workers=None, **common)
    _step(3, total, "pbn clean, pbn split: drop what cannot be learned from; hold out unseen artists")
    cli.clean(min_paintings=2, images=None, **common)
    cli.split(test_artists=0.2, val_fraction=0.1, val_artists=None, seed=seed, **common)
    _step(4, total, "pbn resize: every painting decoded once into a 256x256 cache")
    cli.resize(size=256, fit="crop", max_pixels=500_000_000, images=None, workers=None, **common)

    _step(5, total, f"pbn train --preset quick --epochs {epochs} --run demo: a Siamese CNN (triplet loss)")
    run = ws / "runs" / "demo"
    resume = (run / "checkpoints" / "last.pt").exists()
    if run.exists() and not resume:
        shutil.rmtree(run)  # killed before its first checkpoint: start it again
    train_opts = {name: None for name in (
        "backbone", "input_size", "embedding_dim", "normalize", "pretrained", "sampler", "miner", "batch_size",
        "paintings_per_artist", "max_minutes", "lr", "margin", "view", "compile_model")}
    cli.train(mode="triplet", preset="quick", run="demo", resume=resume, epochs=epochs, seed=seed, device=device,
              gpu=False, workspace=ws, **train_opts)

    _step(6, total, "pbn eval --run demo, pbn eval --baseline color-hist: unseen artists, beside a baseline")
    eval_opts = dict(split="test", checkpoint="best", triplets=20_000, group_size=1800, seed=0, device=device,
                     gpu=False, workspace=ws)
    cli.eval(run=None, baseline="color-hist", **eval_opts)
    cli.eval(run="demo", baseline=None, **eval_opts)

    a, same, other = _pick_paintings(ws)
    _step(7, total, f"pbn compare: two paintings by one unseen artist ({a.name}, {same.name}), then another artist's")
    cli.compare(a=a, b=same, run="demo", model=None, checkpoint="best", as_json=False, sheet=folder / "compare-same.png",
                device=device, workspace=ws)
    cli.compare(a=a, b=other, run="demo", model=None, checkpoint="best", as_json=False,
                sheet=folder / "compare-different.png", device=device, workspace=ws)
    _step(8, total, f"pbn search {a.name} --split test: its nearest paintings among the unseen artists'")
    cli.search(image=a, k=8, split="test", run="demo", checkpoint="best", as_json=False, sheet=folder / "search.png",
               device=device, workspace=ws)

    _step(9, total, "done")
    report = run / "eval" / "test" / "report.md"
    minutes, seconds = divmod(int(time.monotonic() - start), 60)
    console.out.print(
        f"demo finished in {minutes} min {seconds:02d} s.\n"
        f"  report:   {report} (metrics, ROC, distances, the model's mistakes, a map of the test paintings)\n"
        f"  pictures: {folder / 'compare-same.png'}, {folder / 'compare-different.png'}, {folder / 'search.png'}\n"
        f"  next:     pbn status -w {ws};  pbn runs -w {ws};  pbn compare A B -w {ws}",
        highlight=False,
    )
