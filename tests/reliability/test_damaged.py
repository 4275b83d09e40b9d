"""A damaged workspace: one line naming the file and how to recover, never a traceback; caches heal themselves."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from helpers import invoke, one_error_line

from pbn_cli.core.workspace import Workspace
from pbn_cli.data.paths import image_root


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage\xff" * 7)


@pytest.fixture
def ws(tmp_path, evaluated_run) -> Path:
    dst = tmp_path / "ws"
    shutil.copytree(evaluated_run, dst)
    return dst


def _images(ws: Path) -> tuple[Path, Path]:
    root = Path(image_root(Workspace(ws)))
    a, b = pd.read_parquet(ws / "manifests/split.parquet")["path"][:2]
    return root / a, root / b


CASES = [
    # (file, damage, command, what the one line must say)
    ("manifests/ingest.parquet", _truncate, ["clean", "--force"], ["ingest.parquet is damaged", "pbn ingest --force"]),
    ("manifests/split.parquet", _garbage, ["train", "--preset", "quick", "--epochs", "1"],
     ["split.parquet is damaged", "pbn split --force"]),
    ("manifests/resize.parquet", _truncate, ["eval", "--device", "cpu"], ["resize.parquet is damaged", "pbn resize --force"]),
    ("cache/images_64.npy", _truncate, ["eval", "--device", "cpu"], ["images_64.npy is damaged", "pbn resize --force"]),
    ("cache/images_64.npy", _garbage, ["train", "--preset", "quick", "--epochs", "1"],
     ["images_64.npy is damaged", "pbn resize --force"]),
    ("runs/r/checkpoints/best.pt", _truncate, ["eval", "--device", "cpu"],
     ["best.pt cannot be loaded", "--checkpoint best or last"]),
    ("runs/r/checkpoints/last.pt", _garbage, ["train", "--run", "r", "--resume", "--epochs", "2"],
     ["last.pt cannot be loaded", "train again"]),
    ("runs/r/checkpoints/best.pt", _garbage, ["export", "r", "out.pt"], ["best.pt cannot be loaded"]),
    ("runs/r/calibration.json", _garbage, ["compare", "A", "B", "--device", "cpu"],
     ["calibration.json is damaged", "pbn eval --run r"]),
]


@pytest.mark.parametrize("rel, damage, command, says", CASES, ids=[f"{c[0]}-{c[1].__name__}-{c[2][0]}" for c in CASES])
def test_damaged_file_is_one_line_with_the_fix(ws, rel, damage, command, says):
    a, b = _images(ws)
    damage(ws / rel)
    command = [str(a) if x == "A" else str(b) if x == "B" else str(ws / x) if x == "out.pt" else x for x in command]
    result = invoke(*command, "-w", ws)
    assert result.exit_code != 0
    line = one_error_line(result.output)
    for text in says:
        assert text in line, line


def test_status_names_damaged_manifests_and_cache(ws):
    _garbage(ws / "manifests/clean.parquet")
    _truncate(ws / "cache/images_64.npy")
    result = invoke("status", "-w", ws, "--json")
    assert result.exit_code == 0, result.output
    state = {r["stage"]: r for r in json.loads(result.stdout)}
    assert state["ingest"]["state"] == "up to date"
    assert state["clean"]["state"] == "damaged" and "pbn clean --force" in state["clean"]["why"]
    assert state["split"]["state"] == "stale" and "clean is damaged" in state["split"]["why"]
    assert state["resize"]["state"] == "damaged" and "pbn resize --force" in state["resize"]["why"]
    shown = invoke("status", "-w", ws)
    assert shown.exit_code == 0 and "clean damaged:" in shown.output and "Traceback" not in shown.output


def test_damaged_figures_do_not_hide_the_runs(ws):
    _garbage(ws / "runs/r/eval/test/metrics.json")
    _truncate(ws / "runs/r/history.parquet")
    result = invoke("runs", "-w", ws)
    assert result.exit_code == 0, result.output
    assert "run r: damaged, shown without them: history.parquet, metrics.json" in result.output


def test_damaged_caches_of_embeddings_are_computed_again(ws, tmp_path):
    a, _ = _images(ws)
    first = invoke("search", a, "--device", "cpu", "-w", ws, "--json")
    assert first.exit_code == 0
    (chunk,) = [p for p in (ws / "embeddings").glob("*/part-*.parquet") if not p.parent.name.startswith("copy-")][:1]
    _garbage(chunk)
    again = invoke("search", a, "--device", "cpu", "-w", ws, "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == json.loads(first.stdout)  # the damaged chunk's paintings embedded again
    assert not chunk.exists() or pq.read_table(chunk).num_rows

    pairs = tmp_path / "pairs.csv"
    paths = pd.read_parquet(ws / "runs/r/eval/test/embeddings.parquet")["image_id"]
    split = pd.read_parquet(ws / "manifests/split.parquet").set_index("image_id")["path"]
    names = [split[i] for i in paths]
    pd.DataFrame({"index": range(len(names) - 1), "image1": names[:-1], "image2": names[1:]}).to_csv(pairs, index=False)
    args = ["predict", pairs, "--images", a.parent, "--device", "cpu", "-o", tmp_path / "sub.csv", "-w", ws]
    assert invoke(*args).exit_code == 0
    first = (tmp_path / "sub.csv").read_bytes()
    for part in (ws / "runs/r/predict/best").glob("part-*.parquet"):
        _truncate(part)
    healed = invoke(*args)
    assert healed.exit_code == 0 and f"{len(names)} embedded now" in healed.output
    assert (tmp_path / "sub.csv").read_bytes() == first


def test_damaged_resize_journal_starts_afresh(ws):
    (ws / "cache/images_64.journal").write_bytes(b"\xff\xfe not json\n[1, 2]\n")
    result = invoke("resize", "--size", "64", "--force", "-w", ws)
    assert result.exit_code == 0, result.output
    assert not (ws / "cache/images_64.journal").exists()
