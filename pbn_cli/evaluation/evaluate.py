"""eval: embed every painting of a split once and compute the metrics of docs/metrics.md.

Writes the run's (or a baseline's) eval folder. Its steps: embed the
paintings (from the model's store), fit the verdict's calibration and the
attribution model (evaluation/fitting.py, which also keeps them in the run,
keyed by the fingerprint of the weights), measure (evaluation/scores.py,
evaluation/attribution.py), draw and report (evaluation/report.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pbn_cli.core import locking
from pbn_cli.core.atomic import read_json, write_text
from pbn_cli.core.device import select_device
from pbn_cli.core.errors import InputError
from pbn_cli.core.manifest import Record, write_manifest
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.runs import Run, find_run
from pbn_cli.core.tracking import open_tracker
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.cache import CacheData
from pbn_cli.evaluation import fitting, report
from pbn_cli.evaluation.attribution import cross_fitted, mixed_figures, unseen_figures, workspace_figures
from pbn_cli.evaluation.fitting import background_rows, paintings
from pbn_cli.evaluation.scores import calibration_figures, compute_metrics
from pbn_cli.answers import calibration, metrics
from pbn_cli.model import trained
from pbn_cli.answers.attribution import AttributionModel
from pbn_cli.answers.attribution_fitting import fit_attribution


@dataclass
class Evaluation:
    """What an eval wrote: the run (or baseline) and split, its folder, and its figures."""

    run: str
    split: str
    folder: Path
    metrics: dict


class _Thumbnails:
    """Cached paintings of a split by position, read only when a picture needs them."""

    def __init__(self, data: CacheData, rows: np.ndarray):
        self.data, self.rows = data, rows

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.data.images[self.rows[int(i)]])


def evaluate_baseline(
    ws: Workspace,
    *,
    name: str,
    split: str,
    seed: int,
    n_triplets: int,
    group_size: int,
    progress: Progress = SILENT,
) -> Evaluation:
    """The same metrics for a descriptor that learns nothing, under baselines/<name>/<split>/ (the options'
    defaults are the public API's: api/evaluation.py)."""
    from pbn_cli.evaluation.baseline import BASELINES, describe

    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    _check_sampling(n_triplets, group_size)
    data = CacheData(ws)
    rows = _rows_to_evaluate(data, split)
    folder = ws.baseline(name, split)
    fit_splits = fitting.calibration_splits(data)
    with locking.hold(folder.parent / f"{split}.lock", f"baseline {folder}"):
        progress.start(len(rows) + sum(len(data.split(s)) for s in fit_splits))

        def embed(part) -> np.ndarray:
            out = []
            for start in range(0, len(part), 256):
                out.append(describe(data.gather(part.rows[start : start + 256]), name))
                progress.advance(len(out[-1]))
            return np.concatenate(out)

        emb = embed(rows)
        calib = calibration.fit_parts([(embed(data.split(s)), data.split(s).artists) for s in fit_splits], seed)
        figures = compute_metrics(emb, rows.artists, seed, n_triplets, group_size, calib.get("threshold"))
        figures.update(calibration_figures(emb, rows.artists, calib, seed)[0])
        figures.update(baseline=name, split=split, calibration_fitted_on="+".join(fit_splits))
        _write_outputs(folder, rows, emb, figures, {"baseline": name, "split": split})
    return Evaluation(name, split, folder, figures)


class Clock:
    """How long each phase of a piece of work took, in order (seconds)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._t = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = round(now - self._t, 2)
        self._t = now


def _rows_to_evaluate(data: CacheData, split: str):
    if split not in ("test", "val", "train"):
        raise InputError(f"--split must be test, val or train, got {split!r}")
    rows = data.split(split)
    if len(rows) < 3 or len(np.unique(rows.labels)) < 2:
        raise InputError(f"the {split} split has too few paintings or artists to evaluate")
    return rows


def _embed(model, ws: Workspace, data: CacheData, parts: dict, device, half: bool, progress: Progress) -> tuple[dict, dict]:
    """Each part's embeddings, from one pass over the model's store for all of them; and how many of each part's
    paintings this pass embedded (the others were stored)."""
    ids = np.unique(np.concatenate([part.image_ids.astype(str) for part in parts.values()]))
    union = data.select(data.table[data.table["image_id"].astype(str).isin(ids)])
    missing = set(union.image_ids[model.store(ws, half).missing(union)].astype(str))
    emb = model.embeddings(ws, data, union, device, half=half, progress=progress)
    at = {image_id: i for i, image_id in enumerate(union.image_ids.astype(str))}
    embedded = {name: emb[[at[i] for i in part.image_ids.astype(str)]] for name, part in parts.items()}
    return embedded, {name: sum(i in missing for i in part.image_ids.astype(str)) for name, part in parts.items()}


def attribution_figures(embedded: dict, parts: dict, seed: int) -> tuple[AttributionModel, dict, dict]:
    """The attribution model of the workspace, fitted on its training paintings (``background_rows``), its trained
    hands' held-out paintings (val) and artists never trained on (calib) (answers/attribution_fitting.py), and the
    figures and pictures of its three protocols (evaluation/attribution.py)."""
    background, val, calib, test = (paintings(embedded, parts, name) for name in ("background", "val", "calib", "test"))
    att = fit_attribution(background, val, calib, seed)
    figures, pictures = unseen_figures(paintings(embedded, parts, "eval"), att, seed)
    folds = cross_fitted(background, val, calib, test, seed)  # both workspace protocols answer with these fits
    ws_figures, ws_pictures = workspace_figures(background, val, calib, test, seed, folds=folds)
    mixed, mixed_pictures = mixed_figures(background, val, calib, test, seed, folds=folds)
    figures.update(ws_figures, **mixed)
    return att, figures, {"unseen": pictures, "workspace": ws_pictures, "mixed": mixed_pictures}


def _write_outputs(folder: Path, rows, emb: np.ndarray, figures: dict, params: dict) -> None:
    frame = pd.DataFrame({"image_id": rows.image_ids, "artist": rows.artists, "embedding": list(emb)})
    write_manifest(folder / "embeddings.parquet", frame, Record("embeddings", params))
    write_text(folder / "metrics.json", json.dumps(figures, indent=2))


def baseline_metrics(ws: Workspace, split: str, name: str = "color-hist") -> dict | None:
    """The stored figures of a baseline on ``split``, if it was computed."""
    path = ws.baseline(name, split) / "metrics.json"
    return read_json(path, f"re-create it with `pbn eval --baseline {name} --split {split}`")


def _check_sampling(n_triplets: int, group_size: int) -> None:
    if n_triplets < 1:
        raise InputError(f"--triplets must be at least 1, got {n_triplets}")
    if group_size < 2:
        raise InputError(f"--group-size must be at least 2 (pairs need two paintings), got {group_size}")


def _load(ws: Workspace, run: Run, which: str, engine_name: str, device_name: str, progress: Progress):
    """The checkpoint's trained model, and the device it embeds on (None: through its ONNX export)."""
    model = trained.from_checkpoint(ws, run, which)
    if engine_name == "onnx":
        trained.attach_runtime(run, model, progress)
        return model, None
    return model, select_device(device_name)


def _write_report(folder: Path, ws: Workspace, split: str, run: Run, which: str, model, data: CacheData,
                  figures: dict, pictures: dict) -> None:
    """report.md in the eval folder: the figures and where the time went, the pictures, the recipe, the baseline."""
    counts = {f"{name} split": f"{len(part)} paintings, {len(np.unique(part.labels))} artists"
              for name in ("train", "val", "test") for part in [data.split(name)]}
    report.write_report(folder, f"Evaluation of run {run.name} ({which} checkpoint, epoch {model.epoch})", figures,
                        pictures, model.config.to_dict(), baseline_metrics(ws, split), counts, run.curves)


def evaluate(
    ws: Workspace,
    *,
    run_name: str | None,
    split: str,
    which: str,
    device_name: str,
    engine_name: str,
    seed: int,
    n_triplets: int,
    group_size: int,
    half: bool,
    progress: Progress = SILENT,
) -> Evaluation:
    """Embed the split (from the model's embedding store, with ``engine_name``: torch or onnx), fit the verdict
    calibration and the attribution model (evaluation/fitting.py), measure, write the eval folder; where the time
    went is in its figures."""
    _check_sampling(n_triplets, group_size)
    clock = Clock()
    run: Run = find_run(ws, run_name)
    model, device = _load(ws, run, which, engine_name, device_name, progress)
    clock.lap("loading the network" + (" (and its ONNX export)" if model.runtime else ""))
    data = CacheData(ws)
    rows = _rows_to_evaluate(data, split)
    folder = run.eval_folder(split, which)
    with locking.hold(folder.parent / f"{folder.name}.lock", f"evaluation {folder}"):
        fit_splits = fitting.calibration_splits(data)
        parts = {"eval": rows, "background": background_rows(data),
                 **{name: data.split(name) for name in {*fit_splits, "val", "calib", "test"}}}
        embedded, now = _embed(model, ws, data, parts, device, half, progress)
        clock.lap(f"embedding ({model.engine})")
        calib = fitting.fit_calibration(model, which, embedded, parts, fit_splits, seed)
        clock.lap("fitting the verdict calibration")
        att, attribution, attribution_pictures = attribution_figures(embedded, parts, seed)
        clock.lap("fitting and measuring attribution")
        emb = embedded["eval"]
        pairs = metrics.pair_scores(emb, rows.artists, seed, group_size)  # shared by the figures and the pictures
        figures = compute_metrics(emb, rows.artists, seed, n_triplets, group_size, calib.get("threshold"), pairs=pairs)
        reliable, probabilities = calibration_figures(emb, rows.artists, calib, seed)
        figures.update(reliable, checkpoint=str(run.checkpoint(which).relative_to(ws.root)), epoch=model.epoch,
                       split=split, run=run.name, calibration_fitted_on=calib["fitted_on"], half=half)
        figures.update(attribution)
        fitting.save_fitted(run, which, calib, att)
        clock.lap("figures with intervals")
        pictures = report.write_pictures(folder, emb, rows.artists, _Thumbnails(data, rows.rows), figures, seed, pairs,
                                         probabilities, attribution_pictures)
        clock.lap("pictures")
        figures["engine"] = model.engine
        timing = {"embedded_now": {k: int(v) for k, v in now.items()}, "embedded_of": {k: len(v) for k, v in
                                                                                       parts.items()},
                  "seconds": dict(clock.laps)}  # this eval's, not the run's: in time.json, apart from the figures
        _write_report(folder, ws, split, run, which, model, data, {**figures, **timing}, pictures)
        _write_outputs(folder, rows, emb, figures, {"run": run.name, "checkpoint": which, "split": split})
        write_text(folder / "time.json", json.dumps(timing, indent=2))
        _project(run, f"{split}-{which}", emb, rows, data)
    return Evaluation(run.name, split, folder, {**figures, **timing})


PROJECTED = 2000  # paintings shown in TensorBoard's projector (an even sample of larger splits)


def _project(run: Run, tag: str, emb: np.ndarray, rows, data: CacheData, side: int = 48) -> None:
    """The split's embeddings in TensorBoard's projector, each painting as its picture, labelled by its artist."""
    tracker = open_tracker(run.tensorboard)
    if tracker.folder is None:
        return
    import torch
    import torch.nn.functional as F

    pick = np.unique(np.linspace(0, len(rows) - 1, min(PROJECTED, len(rows))).round().astype(int))
    pixels = torch.from_numpy(data.gather(rows.rows[pick])).permute(0, 3, 1, 2).float() / 255
    sprites = F.interpolate(pixels, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    try:
        tracker.embedding(emb[pick], [str(a) for a in rows.artists[pick]], sprites.clamp(0, 1), tag)
    finally:
        tracker.close()
