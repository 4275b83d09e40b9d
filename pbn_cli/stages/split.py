"""split: artist-disjoint train / val / calib / test -> ``manifests/split.parquet``.

An artist goes to ``test`` when a seeded hash of its name falls below
``test_artists``, so adding artists later never moves existing ones and the
result does not depend on row order. Of the others, those whose hash (with
another salt) falls below ``calib_artists`` go to ``calib``, and at least
``MIN_CALIB`` of them (an eighth of the others when fewer, but 3 when that
leaves three times as many for training): whole artists never trained on, on whom `pbn eval` fits the verdict's probability and
attribution's unknown hands (a fit on trained artists is overconfident on
new ones; with 3 calib artists p(top hand) was off by 0.27 on old masters'
unseen artists, with 8 by 0.09: docs/benchmarks.md). Of the remaining artists' paintings, those whose seeded
hash falls below ``val_fraction`` go to ``val``, except that every artist
keeps at least two paintings (an anchor and a positive) in ``train``. With
``val_artists`` a fraction of the training artists is held out whole
instead, an artist-disjoint ``val``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from pbn_cli.core.errors import InputError
from pbn_cli.core.manifest import Record, read_manifest, write_manifest
from pbn_cli.core.workspace import Workspace
from pbn_cli.stages.common import StageResult

SPLITS = ("train", "val", "calib", "test")
MIN_CALIB = 8  # calibration artists at least, or an eighth of the artists not in test when fewer (3 when that
#              leaves 3 x as many to train on; none below 3)


def unit_hash(seed: int, salt: str, key: str) -> float:
    """A uniform number in [0, 1) fixed by (seed, salt, key)."""
    digest = hashlib.sha256(f"{seed}\x1f{salt}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(
    image_ids: pd.Series,
    artists: pd.Series,
    test_artists: float = 0.2,
    val_fraction: float = 0.1,
    val_artists: float | None = None,
    seed: int = 0,
    calib_artists: float = 0.0,
) -> pd.Series:
    """The split of each painting; a pure function of the (image_id, artist) pairs."""
    artist_u = {a: unit_hash(seed, "test", a) for a in artists.unique()}
    split = pd.Series("train", index=image_ids.index, dtype=object)
    split[artists.map(artist_u) < test_artists] = "test"
    if calib_artists > 0:
        split[artists.isin(_calibration_artists(artist_u, test_artists, calib_artists, seed))] = "calib"
    if val_artists is not None:
        held = {a: unit_hash(seed, "val-artist", a) < val_artists for a in artists.unique()}
        split[(split == "train") & artists.map(held)] = "val"
        return split
    u = image_ids.map(lambda i: unit_hash(seed, "val", i))
    candidate = (split == "train") & (u < val_fraction)
    train = split == "train"
    for artist, idx in artists[train].groupby(artists[train]).groups.items():
        ids = idx[candidate[idx].to_numpy()]
        room = len(idx) - 2  # paintings that may leave train
        if room <= 0:
            continue
        chosen = ids[np.argsort(u[ids].to_numpy(), kind="stable")][:room]
        split[chosen] = "val"
    return split


def _calibration_artists(artist_u: dict, test_artists: float, share: float, seed: int) -> set:
    rest = {a: unit_hash(seed, "calib", a) for a, u in artist_u.items() if u >= test_artists}
    chosen = {a for a, u in rest.items() if u < share}
    want = min(MIN_CALIB, max(len(rest) // 8, min(3, len(rest) // 3)))
    if len(chosen) < want and want >= 3:
        chosen = set(sorted(rest, key=rest.get)[:want])
    return chosen


def split(
    ws: Workspace,
    *,
    test_artists: float = 0.2,
    val_fraction: float = 0.1,
    val_artists: float | None = None,
    calib_artists: float = 0.1,
    seed: int = 0,
    force: bool = False,
) -> StageResult:
    """Build the split manifest from the clean manifest."""
    for name, value in (("--test-artists", test_artists), ("--val-fraction", val_fraction),
                        ("--calib-artists", calib_artists)):
        if not 0 <= value < 1:
            raise InputError(f"{name} must be in [0, 1), got {value}")
    if val_artists is not None and not 0 <= val_artists < 1:
        raise InputError(f"--val-artists must be in [0, 1), got {val_artists}")
    up = ws.require("clean")
    params = {"test_artists": test_artists, "val_fraction": val_fraction, "val_artists": val_artists,
              "calib_artists": calib_artists, "seed": seed}
    inputs = {"clean": up.fingerprint}
    record = ws.record("split")
    if not force and record is not None and record.params == params and record.inputs == inputs:
        return StageResult(True, record.rows, 0, summary=record.extra.get("counts", {}))
    frame, _ = read_manifest(ws.manifest("clean"))
    frame["split"] = assign_splits(frame["image_id"], frame["artist"], test_artists, val_fraction, val_artists, seed,
                                   calib_artists)
    counts = {
        s: {"artists": int(frame.loc[frame["split"] == s, "artist"].nunique()), "paintings": int((frame["split"] == s).sum())}
        for s in SPLITS
    }
    record = Record("split", params, inputs, extra={**up.extra, "counts": counts})
    write_manifest(ws.manifest("split"), frame, record)
    return StageResult(False, len(frame), 0, summary=counts, record=record)
