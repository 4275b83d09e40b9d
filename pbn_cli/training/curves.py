"""The training curves: loss and validation figures per epoch, redrawn after each epoch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pbn_cli.core.pictures import pyplot, save_figure


def training_curves(history: pd.DataFrame, path: Path, title: str = "") -> None:
    """Training loss and validation metrics per epoch."""
    plt = pyplot()
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
