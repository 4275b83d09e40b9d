"""clean: drop what cannot be learned from -> ``manifests/clean.parquet``.

- exact duplicate files (sha256 of the bytes, computed only where byte sizes
  collide and kept in the ``sha256`` column): one kept when the copies share
  an artist, all dropped when their artists disagree;
- then artists with fewer than ``min_paintings`` paintings (in Kaggle's data
  these include "artists" that are really painting titles).
"""

from __future__ import annotations

import pandas as pd

from pbn_cli.core.manifest import Record, file_digest, read_manifest, write_manifest
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.paths import image_root, locate
from pbn_cli.stages.common import StageResult, reason_counts


def _hash_colliding(frame: pd.DataFrame, root: str, progress: Progress) -> pd.Series:
    digests = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    colliding = frame.index[frame["bytes"].duplicated(keep=False)]
    for i in colliding:
        full, _ = locate(root, frame.at[i, "path"])
        digests[i] = file_digest(full) if full else None
        progress.advance(1)
    return digests


def clean(
    ws: Workspace,
    *,
    min_paintings: int = 2,
    force: bool = False,
    images=None,
    progress: Progress = SILENT,
) -> StageResult:
    """Build the clean manifest from the ingest manifest."""
    up = ws.require("ingest")
    params = {"min_paintings": min_paintings}
    inputs = {"ingest": up.fingerprint}
    if not force and ws.up_to_date("clean", params, inputs):
        return StageResult(True, ws.record("clean").rows, 0, {})
    frame, _ = read_manifest(ws.manifest("ingest"))
    root = image_root(ws, up, images)

    frame["sha256"] = _hash_colliding(frame, root, progress)
    reason = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    hashed = frame[frame["sha256"].notna()].sort_values("image_id")
    for _, group in hashed.groupby("sha256", sort=False):
        if len(group) < 2:
            continue
        artists = sorted(group["artist"].unique())
        if len(artists) == 1:
            keep = group["image_id"].iloc[0]
            reason[group.index[1:]] = f"duplicate file: same bytes as {keep}"
        else:
            reason[group.index] = (
                "duplicate file attributed to different artists: " + "; ".join(artists)
            )
    alive = reason.isna()
    counts = frame[alive].groupby("artist")["image_id"].transform("count")
    few = counts[counts < min_paintings].index
    reason[few] = (
        f"artist has fewer than {min_paintings} paintings (--min-paintings): "
        + counts[few].astype(str)
        + " left"
    )

    kept = frame[reason.isna()].reset_index(drop=True)
    rejected = frame[reason.notna()].copy()
    rejected["reason"] = reason[reason.notna()]
    record = Record("clean", params, inputs, extra=dict(up.extra))
    write_manifest(ws.rejected("clean"), rejected.reset_index(drop=True), Record("clean.rejected", params, inputs))
    write_manifest(ws.manifest("clean"), kept, record)
    return StageResult(False, len(kept), len(rejected), reason_counts(rejected), record)
