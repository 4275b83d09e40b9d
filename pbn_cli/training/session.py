"""A training command's session: which run it writes, what --resume may change, how Ctrl-C stops it."""

from __future__ import annotations

import contextlib
import signal
import threading

from pbn_cli.core import locking
from pbn_cli.core.errors import InputError
from pbn_cli.core.progress import Progress
from pbn_cli.core.runs import Run, find_run, new_name, run_for
from pbn_cli.core.workspace import Workspace
from pbn_cli.model.recipe import RESUMABLE, TrainConfig


@contextlib.contextmanager
def stop_on_ctrl_c(progress: Progress):
    """The first Ctrl-C asks the loop to stop after the current step (and save); a second aborts."""
    position: dict = {}
    if threading.current_thread() is not threading.main_thread():
        yield position
        return

    def ask(signum, frame):
        if position.get("stop"):
            raise KeyboardInterrupt
        position["stop"] = True
        progress.message("stopping after this step and saving (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, ask)
    try:
        yield position
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


def check_unchanged(name: str, stored: TrainConfig, changes: dict) -> None:
    """Refuse --resume with options that would change the run's recipe."""
    for key, value in changes.items():
        if value is None or key in RESUMABLE:
            continue
        before = stored.get(key)
        if before != value:
            option = "--" + key.replace("_", "-")
            raise InputError(
                f"run {name} was trained with {option} {before}; --resume continues it with its own recipe: "
                f"drop {option} {value}, or train a new run"
            )


def epoch_line(row: dict) -> str:
    """One epoch's figures as the person at the terminal reads them."""
    return (f"epoch {row['epoch']}: loss {row['train_loss']:.4f}, val triplet acc {row['val_triplet_accuracy']:.3f}, "
            f"val AUC {row['val_pair_auc']:.3f}, {row['images_per_s']:.0f} img/s")
