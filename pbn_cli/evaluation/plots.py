"""Pictures (matplotlib, Agg backend, PNG), written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from pbn_cli.atomic import write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    write_bytes(path, buf.getvalue())


def training_curves(history: pd.DataFrame, path: Path, title: str = "") -> None:
    """Training loss and validation metrics per epoch."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(history["epoch"], history["train_loss"], marker="o", color="tab:red")
    left.set(xlabel="epoch", ylabel="training loss (mean per sample)", title="loss")
    for col, label in (("val_triplet_accuracy", "val triplet accuracy"), ("val_pair_auc", "val pair AUC")):
        if col in history and history[col].notna().any():
            right.plot(history["epoch"], history[col], marker="o", label=label)
    right.axhline(0.5, color="grey", lw=0.8, ls="--", label="chance")
    right.set(xlabel="epoch", ylim=(0.4, 1.0), title="validation")
    right.legend(loc="lower right")
    fig.suptitle(title)
    save_figure(fig, path)
