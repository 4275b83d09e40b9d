"""Two at once: writers of the same thing are refused at once naming the first; others go ahead; readers read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from helpers import holds_a_lock, invoke, kill, one_error_line, start, wait_for

from pbn_cli.core.workspace import Workspace
from pbn_cli.data.paths import image_root
from pbn_cli.data.synth import synth
from pbn_cli.stages.clean import clean
from pbn_cli.stages.ingest import ingest

TINY = ["--preset", "quick", "--input-size", "32", "--embedding-dim", "16", "--batch-size", "16", "--device", "cpu"]


def test_second_resize_is_refused_naming_the_first_and_readers_still_read(tmp_path):
    synth(tmp_path / "data", artists=8, paintings=8, seed=5, min_size=900, max_size=1400)
    ws = Workspace(tmp_path / "ws")
    ingest(ws, tmp_path / "data/train_info.csv")
    clean(ws)
    assert invoke("split", "-w", ws.root).exit_code == 0
    first = start("resize", "--workers", "1", "-w", ws.root)
    try:
        assert wait_for(lambda: holds_a_lock(ws.root, first.pid), first), "the first resize ended too soon"
        second = invoke("resize", "-w", ws.root)
        assert second.exit_code == 1
        line = one_error_line(second.output)
        assert f"pid {first.pid}" in line and "resize --workers 1" in line and first.poll() is None
        status = invoke("status", "-w", ws.root)
        assert status.exit_code == 0 and "split" in status.output
    finally:
        first.communicate()
    assert first.returncode == 0
    assert invoke("resize", "-w", ws.root).exit_code == 0  # the lock is free again


def test_training_one_run_while_others_train_evaluate_and_read(tmp_path, evaluated_run):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    first = start("train", *TINY, "--epochs", "500", "--run", "a", "-w", ws)
    try:
        assert wait_for(lambda: holds_a_lock(ws / "runs/a", first.pid), first), first.stderr
        for again in (["--run", "a"], ["--run", "a", "--resume"]):
            refused = invoke("train", *TINY, "--epochs", "1", *again, "-w", ws)
            assert refused.exit_code == 1 and f"pid {first.pid}" in one_error_line(refused.output)
        other = invoke("train", *TINY, "--epochs", "1", "--run", "b", "-w", ws)
        assert other.exit_code == 0, other.output
        assert invoke("eval", "--run", "r", "--device", "cpu", "-w", ws).exit_code == 0
        paths = pd.read_parquet(ws / "manifests/split.parquet")["path"][:2]
        a, b = (Path(image_root(Workspace(ws))) / p for p in paths)
        for reader in (["status"], ["runs"], ["compare", a, b, "--run", "r", "--device", "cpu"],
                       ["search", a, "--run", "r", "--device", "cpu"]):
            result = invoke(*reader, "-w", ws)
            assert result.exit_code == 0, (reader, result.output)
        assert first.poll() is None, "the first training stopped before the others were tried"
    finally:
        kill(first)


def test_two_evals_of_one_run_at_once_both_keep_their_calibration(tmp_path, evaluated_run):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    (ws / "runs/r/calibration.json").unlink()
    jobs = [start("eval", "--run", "r", "--split", split, "--checkpoint", which, "--device", "cpu", "-w", ws)
            for split, which in (("val", "best"), ("test", "last"))]
    for job in jobs:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err
    calibration = json.loads((ws / "runs/r/calibration.json").read_text())
    assert set(calibration) == {"best", "last"}
    assert all(len(entry["weights"]) == 16 for entry in calibration.values())


def test_second_predict_into_the_same_file_is_refused(tmp_path, evaluated_run):
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    split = pd.read_parquet(ws / "manifests/split.parquet")
    root = image_root(Workspace(ws))
    names = split["path"].to_numpy()
    pairs = tmp_path / "pairs.csv"
    n = 1_500_000
    pd.DataFrame({"index": range(n), "image1": names[[k % len(names) for k in range(n)]],
                  "image2": names[[(7 * k + 3) % len(names) for k in range(n)]]}).to_csv(pairs, index=False)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out/submission.csv"
    args = ["predict", pairs, "--images", root, "--device", "cpu", "-o", out, "-w", ws]
    first = start(*args)
    try:
        assert wait_for(lambda: holds_a_lock(tmp_path / "out", first.pid), first), first.stderr
        second = invoke(*args)
        assert second.exit_code == 1 and f"pid {first.pid}" in one_error_line(second.output)
        assert str(out) in one_error_line(second.output)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        kill(first)
    assert len(pd.read_csv(out)) == n
