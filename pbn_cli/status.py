"""What `pbn status` reports: each stage done or not, counts, and staleness."""

from __future__ import annotations

from pbn_cli.manifest import read_manifest, read_record
from pbn_cli.workspace import UPSTREAM, Workspace


def workspace_status(ws: Workspace) -> list[dict]:
    rows = []
    for stage, up in UPSTREAM.items():
        record = ws.record(stage)
        rejected = read_record(ws.rejected(stage))
        row = {
            "stage": stage,
            "done": record is not None,
            "rows": record.rows if record else None,
            "rejected": rejected.rows if record and rejected else None,
            "when": record.created if record else None,
            "state": "not run",
            "why": "",
            "notes": "",
        }
        if record is not None:
            row["state"] = "up to date"
            if ws.is_stale(stage):
                row["state"] = "stale"
                up_record = ws.record(up)
                if up_record is None:
                    row["why"] = f"{up} is missing"
                elif record.inputs.get(up) != up_record.fingerprint:
                    row["why"] = f"{up} was re-run since"
                else:
                    row["why"] = f"{up} is stale"
        if stage == "resize" and record is not None:
            row["notes"] = _near_duplicate_note(ws)
        rows.append(row)
    return rows


def _near_duplicate_note(ws: Workspace) -> str:
    from pbn_cli.stages.resize import straddling_groups

    kept, record = read_manifest(ws.manifest("resize"))
    grouped = kept[kept["near_duplicate_group"] >= 0]
    note = f"{grouped['near_duplicate_group'].nunique()} near-duplicate groups ({len(grouped)} paintings)"
    straddle = straddling_groups(ws, grouped)
    if straddle:
        note += f", {straddle} straddling splits: they inflate test scores"
    return note
