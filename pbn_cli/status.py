"""What `pbn status` reports: each stage done or not, counts, and staleness."""

from __future__ import annotations

from pbn_cli.manifest import read_record
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
        rows.append(row)
    return rows
