"""eval: embed every painting of a split once and compute the metrics of docs/metrics.md."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pbn_cli import locking
from pbn_cli.atomic import read_json, write_text
from pbn_cli.errors import InputError, PbnError
from pbn_cli.evaluation import bootstrap, calibration, metrics, report
from pbn_cli.evaluation.embed import embed_images
from pbn_cli.manifest import Record, write_manifest
from pbn_cli.model.embedder import Embedder
from pbn_cli.runs import Run, latest_run, run_for
from pbn_cli.training import checkpoint
from pbn_cli.training.config import TrainConfig
from pbn_cli.training.data import CacheData
from pbn_cli.training.loop import select_device
from pbn_cli.workspace import Workspace


@dataclass
class Evaluation:
    run: str
    split: str
    folder: Path
    metrics: dict


def load_model(path: Path, device: torch.device) -> tuple[Embedder, TrainConfig, dict]:
    """The network of a checkpoint, in eval mode on ``device``, with its configuration."""
    state = checkpoint.load(path)
    config = TrainConfig.from_dict(state["config"])
    model = Embedder(config.model, load_pretrained=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, state


def compute_metrics(
    emb: np.ndarray,
    artists,
    seed: int,
    n_triplets: int,
    group_size: int,
    threshold: float | None = None,
    replicates: int = 200,
    max_bootstrap_pairs: int = 500_000,
    pairs: tuple | None = None,
) -> dict:
    """Every figure of docs/metrics.md, each with a 95% bootstrap interval over artists (``<name>_ci``).

    ``pairs`` is ``metrics.pair_scores``'s result when the caller already has it.
    """
    codes, _ = metrics._codes(artists)
    n_artists = int(codes.max()) + 1 if len(codes) else 0
    w = bootstrap.artist_weights(n_artists, replicates, seed)
    out: dict = {}

    triplets = metrics.sample_triplets(artists, n_triplets, seed)
    dp = metrics.row_distances(emb[triplets[:, 0]], emb[triplets[:, 1]])
    dn = metrics.row_distances(emb[triplets[:, 0]], emb[triplets[:, 2]])
    correct = (dp < dn) + 0.5 * (dp == dn)
    anchors = codes[triplets[:, 0]]
    out["triplet_accuracy"] = float(correct.mean()) if len(correct) else float("nan")
    out["triplet_accuracy_ci"] = bootstrap.interval(bootstrap.weighted_mean(correct, anchors, w))
    m = len(triplets) // 4 * 4
    b4 = (dp[:m].reshape(-1, 4).mean(1) < dn[:m].reshape(-1, 4).mean(1)) + 0.5 * (dp[:m].reshape(-1, 4).mean(1) == dn[:m].reshape(-1, 4).mean(1))
    out["reference_batch4_accuracy"] = float(b4.mean()) if m else float("nan")
    batch_w = w[:, anchors[:m]].reshape(replicates, -1, 4).mean(2)
    out["reference_batch4_accuracy_ci"] = bootstrap.interval((batch_w * b4).sum(1) / np.maximum(batch_w.sum(1), 1e-12))

    scores, same, pi, pj, n_groups = pairs if pairs is not None else metrics.pair_scores(emb, artists, seed, group_size)
    out["pair_auc"] = metrics.auc(scores, same)  # the figure uses every pair
    rng = np.random.default_rng([seed, 5])
    sub = np.unique(rng.integers(len(scores), size=max_bootstrap_pairs)) if len(scores) > max_bootstrap_pairs else slice(None)
    s_sub, y_sub, ci, cj = scores[sub], same[sub], codes[pi[sub]], codes[pj[sub]]
    order = np.argsort(-s_sub, kind="stable")  # ascending distance
    d_sorted, y_sorted, ci, cj = -s_sub[order], y_sub[order], ci[order], cj[order]
    aucs, accs, eers = [], [], []
    distance = -scores
    del scores
    if threshold is None:
        threshold, _ = calibration.best_threshold(distance, same)
    for r in range(replicates):
        pw = w[r, ci] * w[r, cj]
        aucs.append(bootstrap.weighted_auc(-d_sorted, y_sorted, pw))
        accs.append(calibration.balanced_accuracy(d_sorted, y_sorted, threshold, pw))
        eers.append(calibration.equal_error_rate(d_sorted, y_sorted, pw))
    out["pair_auc_ci"] = bootstrap.interval(np.array(aucs))
    out["verification_accuracy"] = calibration.balanced_accuracy(distance, same, threshold)
    out["verification_accuracy_ci"] = bootstrap.interval(np.array(accs))
    out["eer"] = calibration.equal_error_rate(distance, same)
    out["eer_ci"] = bootstrap.interval(np.array(eers))
    out["threshold"] = float(threshold)

    queries, p1, ap = metrics.retrieval_per_query(emb, artists)
    out["precision_at_1"] = float(p1.mean()) if len(queries) else float("nan")
    out["precision_at_1_ci"] = bootstrap.interval(bootstrap.weighted_mean(p1, codes[queries], w))
    out["map_at_r"] = float(ap.mean()) if len(queries) else float("nan")
    out["map_at_r_ci"] = bootstrap.interval(bootstrap.weighted_mean(ap, codes[queries], w))
    out.update(
        n_paintings=int(len(emb)), n_artists=n_artists, n_triplets=int(len(triplets)), n_pairs=int(len(distance)),
        n_groups=int(n_groups), n_queries=int(len(queries)), bootstrap_replicates=replicates, seed=seed,
    )
    return out


class _Thumbnails:
    """Cached paintings of a split by position, read only when a picture needs them."""

    def __init__(self, data: CacheData, rows: np.ndarray):
        self.data, self.rows = data, rows

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.data.images[self.rows[int(i)]])


def _enough_pairs(rows, minimum: int = 20) -> bool:
    counts = np.bincount(rows.labels) if len(rows) else np.zeros(0, int)
    return int((counts * (counts - 1) // 2).sum()) >= minimum and (counts > 0).sum() >= 2


def save_calibration(run: Run, which: str, calib: dict) -> None:
    """Record the verdict calibration of one checkpoint in runs/<run>/calibration.json."""
    path = run.folder / "calibration.json"
    try:
        current = read_json(path, "") or {}
    except PbnError:
        current = {}  # a damaged calibration file is replaced by this evaluation's
    current[which] = calib
    write_text(path, json.dumps(current, indent=2))


def evaluate_baseline(
    ws: Workspace,
    name: str = "color-hist",
    split: str = "test",
    seed: int = 0,
    n_triplets: int = 20_000,
    group_size: int = 1800,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Evaluation:
    """The same metrics for a descriptor that learns nothing, under baselines/<name>/<split>/."""
    from pbn_cli.evaluation.baseline import BASELINES, describe

    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")
    _check_sampling(n_triplets, group_size)
    data = CacheData(ws)
    rows = _rows_to_evaluate(data, split)
    folder = ws.root / "baselines" / name / split
    fit_split = _calibration_split(data)
    fit_rows = data.split(fit_split)
    with locking.hold(folder.parent / f"{split}.lock", f"baseline {folder}"):
        if on_start:
            on_start(len(rows) + len(fit_rows))

        def embed(part) -> np.ndarray:
            out = []
            for start in range(0, len(part), 256):
                out.append(describe(data.gather(part.rows[start : start + 256]), name))
                if on_progress:
                    on_progress(len(out[-1]))
            return np.concatenate(out)

        emb = embed(rows)
        threshold = calibration.fit(embed(fit_rows), fit_rows.artists, seed).get("threshold")
        figures = compute_metrics(emb, rows.artists, seed, n_triplets, group_size, threshold)
        figures.update(baseline=name, split=split, calibration_fitted_on=fit_split)
        _write_outputs(folder, rows, emb, figures, {"baseline": name, "split": split})
    return Evaluation(name, split, folder, figures)


def _rows_to_evaluate(data: CacheData, split: str):
    if split not in ("test", "val", "train"):
        raise InputError(f"--split must be test, val or train, got {split!r}")
    rows = data.split(split)
    if len(rows) < 3 or len(np.unique(rows.labels)) < 2:
        raise InputError(f"the {split} split has too few paintings or artists to evaluate")
    return rows


def _calibration_split(data: CacheData) -> str:
    """val, unless it has too few same-artist pairs to fit a threshold: then train."""
    return "val" if _enough_pairs(data.split("val")) else "train"


def _write_outputs(folder: Path, rows, emb: np.ndarray, figures: dict, params: dict) -> None:
    frame = pd.DataFrame({"image_id": rows.image_ids, "artist": rows.artists, "embedding": list(emb)})
    write_manifest(folder / "embeddings.parquet", frame, Record("embeddings", params))
    write_text(folder / "metrics.json", json.dumps(figures, indent=2))


def baseline_metrics(ws: Workspace, split: str, name: str = "color-hist") -> dict | None:
    """The stored figures of a baseline on ``split``, if it was computed."""
    path = ws.root / "baselines" / name / split / "metrics.json"
    return read_json(path, f"re-create it with `pbn eval --baseline {name} --split {split}`")


def _check_sampling(n_triplets: int, group_size: int) -> None:
    if n_triplets < 1:
        raise InputError(f"--triplets must be at least 1, got {n_triplets}")
    if group_size < 2:
        raise InputError(f"--group-size must be at least 2 (pairs need two paintings), got {group_size}")


def evaluate(
    ws: Workspace,
    run_name: str | None = None,
    split: str = "test",
    which: str = "best",
    device_name: str = "auto",
    seed: int = 0,
    n_triplets: int = 20_000,
    group_size: int = 1800,
    on_start: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Evaluation:
    _check_sampling(n_triplets, group_size)
    run: Run = run_for(ws, run_name) if run_name else latest_run(ws)
    ckpt = run.checkpoint(which)
    if not ckpt.exists():
        raise InputError(f"run {run.name} has no {which} checkpoint ({ckpt}); train it first")
    device = select_device(device_name)
    model, config, state = load_model(ckpt, device)
    data = CacheData(ws)
    checkpoint.check_cache(state, data.size, run.name)
    rows = _rows_to_evaluate(data, split)
    folder = run.folder / "eval" / (split if which == "best" else f"{split}-{which}")
    with locking.hold(folder.parent / f"{folder.name}.lock", f"evaluation {folder}"):
        def embed(part) -> np.ndarray:
            return embed_images(
                model, lambda idx: data.gather(part.rows[idx]), len(part), config.model.input_size,
                config.view, config.model.normalize, device, on_progress=on_progress,
            )

        fit_split = _calibration_split(data)
        fit_rows = data.split(fit_split)
        if on_start:
            on_start(len(rows) + (len(fit_rows) if fit_split != split else 0))
        emb = embed(rows)
        fit_emb = emb if fit_split == split else embed(fit_rows)
        calib = calibration.fit(fit_emb, fit_rows.artists, seed)
        calib.update(checkpoint=which, epoch=int(state["epoch"]), fitted_on=fit_split)
        if fit_split != "val":
            calib["note"] = "val has too few same-artist pairs: fitted on the training pairs, which flatters the threshold"
        pairs = metrics.pair_scores(emb, rows.artists, seed, group_size)  # shared by the figures and the pictures
        figures = compute_metrics(emb, rows.artists, seed, n_triplets, group_size, calib.get("threshold"), pairs=pairs)
        figures.update(checkpoint=str(ckpt.relative_to(ws.root)), epoch=int(state["epoch"]), split=split, run=run.name,
                       calibration_fitted_on=fit_split)
        save_calibration(run, which, calib)
        pictures = report.write_pictures(folder, emb, rows.artists, _Thumbnails(data, rows.rows), figures, seed, pairs)
        config_dict = config.to_dict()
        counts = {f"{name} split": f"{len(part)} paintings, {len(np.unique(part.labels))} artists"
                  for name in ("train", "val", "test") for part in [data.split(name)]}
        report.write_report(folder, f"Evaluation of run {run.name} ({which} checkpoint, epoch {state['epoch']})",
                            figures, pictures, config_dict, baseline_metrics(ws, split), counts, run.curves)
        _write_outputs(folder, rows, emb, figures, {"run": run.name, "checkpoint": which, "split": split})
    return Evaluation(run.name, split, folder, figures)
