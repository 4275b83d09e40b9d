"""The fitting steps of `pbn eval`: which paintings the verdict's calibration and the attribution model are fitted on,
the verdict's fit, and keeping both beside the run for the checkpoint's weights.

The numbers are fitted in answers/ (``calibration.fit_parts``,
``attribution_fitting.fit_attribution``; numpy only); this module picks the
workspace's paintings they are fitted on (``calibration_splits``,
``background_rows``) and records the result in the run folder
(``Run.calibration``, ``Run.attribution``) under a lock (``save_fitted``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from pbn_cli.answers import calibration
from pbn_cli.answers.attribution import BACKGROUND_MAX, AttributionModel, Paintings, save_attribution
from pbn_cli.core import locking
from pbn_cli.core.atomic import read_json, write_text
from pbn_cli.core.errors import PbnError
from pbn_cli.core.runs import Run
from pbn_cli.data.cache import CacheData

if TYPE_CHECKING:
    from pbn_cli.model.trained import TrainedModel

CALIBRATION_NOTE = ("no calib or val split with enough pairs: fitted on the training pairs, which flatters the "
                    "threshold and makes p(same) overconfident on new artists")


def _enough_pairs(rows, minimum: int = 10) -> bool:
    counts = np.bincount(rows.labels) if len(rows) else np.zeros(0, int)
    return int((counts * (counts - 1) // 2).sum()) >= minimum and (counts > 0).sum() >= 2


def calibration_splits(data: CacheData) -> list[str]:
    """Where the verdict is fitted: val (the training artists' held-out paintings: many hands) and calib (hands
    never trained on), each weighing half (docs/metrics.md says why); train when neither has enough pairs."""
    return [name for name in ("val", "calib") if _enough_pairs(data.split(name))] or ["train"]


def background_rows(data: CacheData, most: int = BACKGROUND_MAX):
    """The training paintings the attribution's gallery of trained hands, whitening and background come from:
    all of them up to ``most``, else an even spread of each artist's (at least 4 each)."""
    rows = data.split("train")
    if len(rows) <= most:
        return rows
    per = max(4, most // max(len(np.unique(rows.labels)), 1))
    pick = np.concatenate([idx[np.unique(np.linspace(0, len(idx) - 1, min(per, len(idx))).round().astype(int))]
                           for idx in (np.flatnonzero(rows.labels == c) for c in np.unique(rows.labels))])
    return rows[np.sort(pick)]


def paintings(embedded: dict, parts: dict, name: str) -> Paintings:
    """One embedded part (its rows in ``parts``, its embeddings in ``embedded``) as attribution's paintings."""
    part = parts[name]
    return Paintings(embedded[name], part.artists, part.image_ids)


def fit_calibration(model: TrainedModel, which: str, embedded: dict, parts: dict, fit_splits: list[str],
                    seed: int) -> dict:
    """The verdict's threshold and Platt map, fitted on ``fit_splits`` (``calibration_splits``), with the
    checkpoint and the fingerprint of the weights they hold for."""
    calib = calibration.fit_parts([(embedded[s], parts[s].artists) for s in fit_splits], seed)
    calib.update(checkpoint=which, epoch=model.epoch, weights=model.fingerprint(), fitted_on="+".join(fit_splits))
    if fit_splits == ["train"]:
        calib["note"] = CALIBRATION_NOTE
    return calib


def save_fitted(run: Run, which: str, calib: dict, att: AttributionModel | None = None) -> None:
    """Record the verdict calibration of one checkpoint in the run's calibration.json (and its attribution model).

    Several evals of one run may finish at once (other splits, the other
    checkpoint): each waits for the file's lock, so none drops another's entry.
    """
    with locking.hold(run.calibration_lock, f"calibration of run {run.name}", wait=True):
        if att is not None:
            save_attribution(run.attribution(which), att)
            calib["attribution"] = str(run.attribution(which).relative_to(run.folder))
        try:
            current = read_json(run.calibration, "") or {}
        except PbnError:
            current = {}  # a damaged calibration file is replaced by this evaluation's
        current[which] = calib
        write_text(run.calibration, json.dumps(current, indent=2))
