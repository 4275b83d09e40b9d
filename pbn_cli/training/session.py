"""A training command's session: which run it writes, how Ctrl-C stops it, where the epoch stands."""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass

import torch

from pbn_cli.core import locking
from pbn_cli.core.errors import InputError
from pbn_cli.core.progress import Progress
from pbn_cli.core.runs import Run, find_run, new_name, run_for
from pbn_cli.core.workspace import Workspace
from pbn_cli.networks.recipe import TrainConfig


@dataclass
class Cursor:
    """Where the epoch in progress stands: the step reached, the loss summed so far, the augmentation generator's
    state; the Ctrl-C handler sets ``stop``. A checkpoint taken mid-epoch records it, so the epoch can be finished
    later with exactly the same result."""

    step: int = 0
    loss_sum: float = 0.0
    images: int = 0
    aug_rng: torch.Tensor | None = None
    stop: bool = False

    def restart(self) -> None:
        self.step, self.loss_sum, self.images, self.aug_rng = 0, 0.0, 0, None


@contextlib.contextmanager
def stop_on_ctrl_c(progress: Progress):
    """The first Ctrl-C asks the loop to stop after the current step (and save); a second aborts."""
    cursor = Cursor()
    if threading.current_thread() is not threading.main_thread():
        yield cursor
        return

    def ask(signum, frame):
        if cursor.stop:
            raise KeyboardInterrupt
        cursor.stop = True
        progress.message("stopping after this step and saving (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield cursor
    finally:
        signal.signal(signal.SIGINT, previous)


def pick_run(ws: Workspace, config: TrainConfig, name: str | None, resume: bool) -> Run:
    if resume:
        run = find_run(ws, name)
        locking.check_free(run.lock, f"run {run.name}")
        if not run.last.exists():
            raise InputError(f"run {run.name} has no checkpoint to resume from ({run.last} is missing)")
        return run
    run = run_for(ws, name or new_name(config.mode, config.model.backbone))
    locking.check_free(run.lock, f"run {run.name}")
    if run.folder.exists() and any(run.folder.iterdir()):
        raise InputError(f"run {run.name} already exists; continue it with `pbn train --run {run.name} --resume` or pick another --run")
    return run


def epoch_line(row: dict) -> str:
    """One epoch's figures as the person at the terminal reads them."""
    return (f"epoch {row['epoch']}: loss {row['train_loss']:.4f}, val triplet acc {row['val_triplet_accuracy']:.3f}, "
            f"val AUC {row['val_pair_auc']:.3f}, {row['images_per_s']:.0f} img/s")
