"""status: what is done and what is stale."""

import json

from conftest import pipeline


def test_status_after_stages_and_after_forced_ingest(pbn, small_set):
    before = json.loads(pbn("status", "--json").stdout)
    assert [r["state"] for r in before] == ["not run"] * 4
    pipeline(pbn, small_set, "clean", "split")
    rows = {r["stage"]: r for r in json.loads(pbn("status", "--json").stdout)}
    assert [rows[s]["state"] for s in ("ingest", "clean", "split", "resize")] == ["up to date"] * 3 + ["not run"]
    assert rows["ingest"]["rows"] == 60 and rows["ingest"]["rejected"] == 0
    pbn("ingest", small_set / "train_info.csv", "--force")
    rows = {r["stage"]: r for r in json.loads(pbn("status", "--json").stdout)}
    assert rows["ingest"]["state"] == "up to date"
    assert (rows["clean"]["state"], rows["clean"]["why"]) == ("stale", "ingest was re-run since")
    assert (rows["split"]["state"], rows["split"]["why"]) == ("stale", "clean is stale")
    table = pbn("status").output
    assert "stale" in table and "re-run since" in table
