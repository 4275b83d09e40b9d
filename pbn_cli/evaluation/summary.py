"""What `pbn runs` (and the page's Runs view) shows of a run: its recipe, progress and figures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pbn_cli.core.runs import Run

#: what `pbn runs` shows of a run, in its order (a table of no runs has these columns too)
COLUMNS = ("run", "mode", "backbone", "preset", "epochs", "best_val_triplet_accuracy", "test_triplet_accuracy",
           "test_pair_auc", "test_open_set_auroc", "test_attribution_top1", "tensorboard", "damaged")

def summarize(run: Run) -> dict:
    """What `pbn runs` shows of one run: its recipe, progress and figures."""
    damaged = []

    def load(path: Path, read, empty):
        try:
            return read(path) if path.exists() else empty
        except Exception:  # one damaged file must not hide the other runs
            damaged.append(path.name)
            return empty

    config = load(run.config, lambda p: json.loads(p.read_text()), {})
    history = load(run.history, pd.read_parquet, pd.DataFrame())
    figures = load(run.eval_folder("test") / "metrics.json", lambda p: json.loads(p.read_text()), {})
    best = history["val_triplet_accuracy"].max() if "val_triplet_accuracy" in history else None
    return dict(zip(COLUMNS, (
        run.name,
        config.get("mode"),
        config.get("model", {}).get("backbone"),
        config.get("preset"),
        int(history["epoch"].max()) if "epoch" in history and len(history) else 0,
        None if best is None or best != best else float(best),
        figures.get("triplet_accuracy"),
        figures.get("pair_auc"),
        figures.get("open_set_auroc"),
        figures.get("attribution_top1"),
        str(run.tensorboard) if run.tensorboard.is_dir() else None,
        damaged,
    ), strict=True))
