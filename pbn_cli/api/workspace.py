"""A workspace for Python: the data stages as methods, and what the workspace holds as tables.

Each stage reads and writes Parquet manifests in the workspace folder, is
idempotent (a second call with nothing changed does nothing) and holds the
workspace's lock while it runs, exactly as the command of the same name.

Example (``data`` is a folder made by ``pbn.synth``, Kaggle's layout):

>>> import pbn_cli as pbn
>>> ws = pbn.Workspace(scratch / "ws")
>>> ws.ingest(data / "train_info.csv").kept
48
>>> ws.clean().skipped, ws.clean().skipped
(False, True)
>>> sorted(ws.split().summary)
['calib', 'test', 'train', 'val']
>>> ws.resize(size=64).kept
48
>>> list(ws.status()["state"])
['up to date', 'up to date', 'up to date', 'up to date']
>>> ws.paintings().groupby("split")["artist"].nunique().to_dict()["test"] > 0
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pbn_cli.core.distributed import world_size
from pbn_cli.core.errors import InputError
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.workspace import Workspace as Folder
from pbn_cli.data import imaging

if TYPE_CHECKING:
    import pandas as pd

    from pbn_cli.stages.common import StageResult

__all__ = ["Workspace", "folder", "runs", "synth"]


def folder(workspace) -> Folder | None:
    """The workspace folder behind a path, a ``pbn.Workspace`` or the core one (None stays None)."""
    if workspace is None or isinstance(workspace, Folder):
        return workspace
    if isinstance(workspace, Workspace):
        return workspace.folder
    return Folder(Path(workspace))


def runs(workspace) -> pd.DataFrame:
    """The workspace's trained runs, one row each: recipe, epochs, best validation and test figures, damaged
    files."""
    from pbn_cli.core.runs import trained_runs
    from pbn_cli.evaluation.summary import summarize

    from pbn_cli.evaluation.summary import COLUMNS

    return _table([summarize(r) for r in trained_runs(folder(workspace))], COLUMNS)


def synth(out: str | os.PathLike, *, artists: int = 40, paintings: int = 12, seed: int = 0, quirks: bool = False,
          min_size: int = 300, max_size: int = 1600, workers: int | None = None,
          progress: Progress = SILENT) -> dict:
    """Make a synthetic painting set in Kaggle's layout (``out/train/``, ``out/train_info.csv``): each artist a
    "hand" of stroke, texture and colour habits. Returns counts: paintings, artists, rows, images (the folder).

    >>> pbn.synth(scratch / "tiny", artists=3, paintings=2, min_size=64, max_size=96)["paintings"]
    6
    """
    from pbn_cli.data.synth import synth as make

    return make(Path(out), artists=artists, paintings=paintings, seed=seed, quirks=quirks, min_size=min_size,
                max_size=max_size, workers=workers, progress=progress)


@dataclass(frozen=True)
class Workspace:
    """A workspace folder: ``ingest``, ``clean``, ``split`` and ``resize`` fill it; ``status``, ``paintings`` and
    ``runs`` read it; ``pbn.load(workspace=...)`` gives one of its trained models."""

    path: Path

    def __init__(self, path: str | os.PathLike = "workspace"):
        object.__setattr__(self, "path", Path(path))

    @property
    def folder(self) -> Folder:
        """The workspace as the library's stages take it."""
        return Folder(self.path)

    def ingest(self, source: str | os.PathLike, *, images: str | os.PathLike | None = None,
               filename_column: str | None = None, artist_column: str | None = None,
               image_column: str | None = None, force: bool = False, workers: int | None = None,
               progress: Progress = SILENT) -> StageResult:
        """Read paintings and their artists from ``source``: a CSV with a filename and an artist column (images
        in ``images``, default train/ beside it), a folder of artist folders, or a Parquet table with the images
        inside (Hugging Face datasets' layout). Rows that cannot be paintings are rejected with a reason."""
        from pbn_cli.stages.ingest import ingest

        ws = self.folder
        with ws.data_lock():
            return ingest(ws, Path(source), images=_path(images), filename_column=filename_column,
                          artist_column=artist_column, image_column=image_column, force=force, workers=workers,
                          progress=progress)

    def clean(self, *, min_paintings: int = 2, images: str | os.PathLike | None = None, force: bool = False,
              progress: Progress = SILENT) -> StageResult:
        """Drop exact duplicate files (kept once when their artists agree) and artists with fewer than
        ``min_paintings`` paintings."""
        from pbn_cli.stages.clean import clean

        ws = self.folder
        with ws.data_lock():
            return clean(ws, min_paintings=min_paintings, force=force, images=_path(images), progress=progress)

    def split(self, *, test_artists: float = 0.2, val_fraction: float = 0.1, val_artists: float | None = None,
              calib_artists: float = 0.1, seed: int = 0, force: bool = False) -> StageResult:
        """Split by artist: test and calib artists never appear in train or val; ``summary`` counts artists and
        paintings per split."""
        from pbn_cli.stages.split import split

        ws = self.folder
        with ws.data_lock():
            return split(ws, test_artists=test_artists, val_fraction=val_fraction, val_artists=val_artists,
                         calib_artists=calib_artists, seed=seed, force=force)

    def resize(self, *, size: int | None = None, fit: str | None = None, max_pixels: int = imaging.DEFAULT_MAX_PIXELS,
               images: str | os.PathLike | None = None, force: bool = False, workers: int | None = None,
               progress: Progress = SILENT) -> StageResult:
        """Decode every clean painting once into the cache: ``size`` px squares (default 256, or the cache's),
        ``fit`` crop (centre) or pad (letterbox). Resumable and incremental."""
        from pbn_cli.stages.resize import resize

        ws = self.folder
        with ws.data_lock():
            return resize(ws, size=size, fit=fit, workers=workers, max_pixels=max_pixels, force=force,
                          images=_path(images), progress=progress)

    def status(self) -> pd.DataFrame:
        """One row per stage: done, rows, rejected, when, state (up to date, stale, not run or damaged), why."""
        from pbn_cli.stages.status import workspace_status

        return _table(workspace_status(self.folder))

    def paintings(self, split: str = "all") -> pd.DataFrame:
        """The cached paintings (after ``resize``) of ``split`` (all, train, val, calib or test): image_id, artist,
        split, the source's own columns, ``file`` (the painting's original file), and the manifests' own
        ``path`` (as ingested), ``digest`` (of its bytes) and ``cache_row`` (its row in the cache)."""
        from pbn_cli.data.cache import CacheData
        from pbn_cli.data.paths import painting_files
        from pbn_cli.inference.search import SPLITS

        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        table = CacheData(self.folder).table
        table = table if split == "all" else table[table["split"] == split]
        files = painting_files(self.folder)
        return table.assign(file=[Path(files[str(i)]) for i in table["image_id"]]).reset_index(drop=True)

    def runs(self) -> pd.DataFrame:
        """One row per trained run: recipe, epochs, best validation and test figures."""
        return runs(self)

    def embed(self, *, run: str | None = None, checkpoint: str = "best", half: bool = False, chunk: int = 512,
              device: str = "auto", engine: str = "auto", progress: Progress = SILENT):
        """Embed every painting that the run's embedding store lacks (each painting once per model; a killed pass
        resumes); under torchrun the processes share the work."""
        from pbn_cli.inference.collection import embed
        from pbn_cli.model.engine import choose

        alone = world_size() <= 1  # under torchrun the ranks share the work with torch
        return embed(self.folder, run_name=run, which=checkpoint, device_name=device,
                     engine_name=choose(engine, device) if alone else "torch", half=half, chunk=chunk,
                     progress=progress)

    def stores(self) -> list[dict]:
        """Each embedding store of the workspace: the model it comes from, paintings stored, size, engines, and its
        vector index."""
        from pbn_cli.inference.collection import stores

        return stores(self.folder)


def _path(p: str | os.PathLike | None) -> Path | None:
    return None if p is None else Path(p)


def _table(rows: list[dict], columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows as a table whose cells keep their Python values (None stays None); ``columns`` when there are none."""
    import pandas as pd

    return pd.DataFrame(rows, dtype=object) if rows else pd.DataFrame(columns=columns)
