"""Manifests: atomic writes, provenance, damaged files."""

import os

import pandas as pd
import pytest

from pbn_cli.core import manifest
from pbn_cli.core.errors import PbnError
from pbn_cli.core.manifest import Record, read_manifest, read_record, write_manifest


def test_provenance_round_trips(tmp_path):
    path = tmp_path / "m" / "ingest.parquet"
    rec = write_manifest(path, pd.DataFrame({"a": [1, 2]}), Record("ingest", {"x": 1}, {"csv": "abc"}, extra={"image_root": "/i"}))
    frame, back = read_manifest(path)
    assert list(frame["a"]) == [1, 2]
    assert (back.stage, back.params, back.inputs, back.rows, back.extra) == ("ingest", {"x": 1}, {"csv": "abc"}, 2, {"image_root": "/i"})
    assert back.fingerprint == rec.fingerprint and len(back.fingerprint) == 16
    assert back.version and back.created


def test_crash_during_write_leaves_the_previous_manifest(tmp_path, monkeypatch):
    path = tmp_path / "clean.parquet"
    write_manifest(path, pd.DataFrame({"a": [1]}), Record("clean"))
    import pyarrow.parquet as pq  # the module manifest writes with, imported when it writes

    real_write = pq.write_table

    def dies_half_way(table, where, **kw):
        real_write(table, where, **kw)
        with open(where, "r+b") as f:
            f.truncate(os.path.getsize(where) // 2)
        raise KeyboardInterrupt  # the process is stopped mid-write

    monkeypatch.setattr(pq, "write_table", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        write_manifest(path, pd.DataFrame({"a": [7, 8, 9]}), Record("clean"))
    frame, _ = read_manifest(path)
    assert list(frame["a"]) == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["clean.parquet"]  # no temp file left


def test_damaged_manifest_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "split.parquet"
    path.write_bytes(b"PAR1 garbage")
    with pytest.raises(PbnError, match=r"split.parquet is damaged .*`pbn split --force`"):
        read_record(path)
