"""What `pbn status` reports: each stage done or not, counts, and staleness."""

from __future__ import annotations

from pbn_cli.core.errors import PbnError
from pbn_cli.core.manifest import read_manifest, read_record
from pbn_cli.core.workspace import UPSTREAM, Workspace
from pbn_cli.data import cache


def workspace_status(ws: Workspace) -> list[dict]:
    """A row per stage; a damaged manifest or cache is reported on its row, not raised."""
    rows = []
    damaged: set[str] = set()
    for stage, up in UPSTREAM.items():
        row = {"stage": stage, "done": False, "rows": None, "rejected": None, "when": None, "state": "not run",
               "why": "", "notes": ""}
        rows.append(row)
        try:
            record = ws.record(stage)
            rejected = read_record(ws.rejected(stage)) if record else None
        except PbnError as err:
            row.update(done=True, state="damaged", why=str(err))
            damaged.add(stage)
            continue
        if record is None:
            continue
        row.update(done=True, rows=record.rows, rejected=rejected.rows if rejected else None, when=record.created,
                   state="up to date")
        if up in damaged:
            row.update(state="stale", why=f"{up} is damaged")
        elif ws.is_stale(stage):
            row["state"] = "stale"
            up_record = ws.record(up)
            if up_record is None:
                row["why"] = f"{up} is missing"
            elif record.inputs.get(up) != up_record.fingerprint:
                row["why"] = f"{up} was re-run since"
            else:
                row["why"] = f"{up} is stale"
        if stage == "resize":
            problem = cache.problem(cache.cache_path(ws.cache, int(record.params.get("size", 256))))
            if problem:
                row.update(state="damaged", why=problem)
            else:
                row["notes"] = _near_duplicate_note(ws)
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
