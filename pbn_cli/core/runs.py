"""Training runs in the workspace: names, the latest one, and every path inside a run.

A ``Run`` is the one place that knows a run folder's layout (docs/pipeline.md):
config, checkpoints, history, curves, calibration, eval outputs, the
search and predict caches of embeddings and the onnx engine's exports.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from pbn_cli.core.errors import InputError
from pbn_cli.core.workspace import Workspace

CHECKPOINTS = ("best", "last", "start")  # start: the pretrained network before training
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Run:
    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def config(self) -> Path:
        return self.folder / "config.json"

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def history(self) -> Path:
        return self.folder / "history.parquet"

    @property
    def curves(self) -> Path:
        return self.folder / "curves.png"

    @property
    def lock(self) -> Path:
        return self.folder / "lock"

    @property
    def calibration(self) -> Path:
        """Verdict calibration per checkpoint, keyed by the weights' fingerprint (written by eval)."""
        return self.folder / "calibration.json"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files of training (scalars) and eval (the projector), when tensorboard is installed."""
        return self.folder / "tensorboard"

    def attribution(self, which: str) -> Path:
        """The attribution model (whitening, background, probability map) eval fitted for a checkpoint."""
        return self.folder / "attribution" / f"{which}.npz"

    @property
    def calibration_lock(self) -> Path:
        return self.folder / "calibration.lock"

    def eval_folder(self, split: str, which: str = "best") -> Path:
        return self.folder / "eval" / (split if which == "best" else f"{split}-{which}")

    def engine_file(self, fingerprint: str, graph: str = "paintings") -> Path:
        """The network exported to ONNX for the onnx engine, once per weights fingerprint (model/engine.py): the
        paintings' graph, or the evidence's tiles graph."""
        return self.folder / "onnx" / (f"{fingerprint}.onnx" if graph == "paintings" else f"{fingerprint}-{graph}.onnx")

    def engine_stamp(self, which: str) -> Path:
        """Which export a checkpoint file answers with: its fingerprint, size and modification time."""
        return self.folder / "onnx" / f"{which}.json"

    def predict_cache(self, which: str) -> Path:
        """Folder of embedding shards of `pbn predict`'s images with the ``which`` checkpoint."""
        return self.folder / "predict" / which

    @property
    def start(self) -> Path:
        """The network before training (pretrained runs): what training is measured against."""
        return self.checkpoints / "start.pt"

    def features(self, name: str) -> Path:
        """Cached backbone features of --freeze-backbone (training/features.py)."""
        return self.folder / "features" / f"{name}.npy"

    def checkpoint(self, which: str) -> Path:
        if which not in CHECKPOINTS:
            raise InputError(f"--checkpoint must be {', '.join(CHECKPOINTS[:-1])} or {CHECKPOINTS[-1]}, got {which!r}")
        return {"best": self.best, "last": self.last, "start": self.start}[which]


def new_name(mode: str, backbone: str) -> str:
    return f"{mode}-{backbone}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_for(ws: Workspace, name: str) -> Run:
    if not NAME.match(name):
        raise InputError(f"run name {name!r}: use letters, digits, '.', '_' and '-' only")
    return Run(ws.runs / name)


def trained_runs(ws: Workspace) -> list[Run]:
    """Runs with a checkpoint, oldest first (by the time their last checkpoint was written)."""
    if not ws.runs.is_dir():
        return []
    runs = [Run(p) for p in ws.runs.iterdir() if Run(p).last.exists()]
    return sorted(runs, key=lambda r: r.last.stat().st_mtime)


def latest_run(ws: Workspace) -> Run:
    runs = trained_runs(ws)
    if not runs:
        raise InputError(f"no trained run in {ws.root}; train one with `pbn train`")
    return runs[-1]


def find_run(ws: Workspace, name: str | None) -> Run:
    """The run called ``name``, or the latest trained run when no name is given."""
    return run_for(ws, name) if name else latest_run(ws)
