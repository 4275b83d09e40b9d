"""compare and export: the same pixels and embeddings as the workspace, one-line errors."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.core.errors import PbnError
from pbn_cli.core.progress import Progress
from pbn_cli.core.workspace import Workspace
from pbn_cli.model import checkpoint
from pbn_cli.training.loop import train
from pbn_cli.training.presets import resolve
from reliability.helpers import invoke, one_error_line
from serving import painting_files

runner = CliRunner()


def _painting_paths(ws, n: int = 2) -> list[str]:
    return [str(p) for p in painting_files(ws)[:n]]


def _two_paintings(ws):
    frame = pd.read_parquet(ws / "runs/r/eval/test/embeddings.parquet")
    files = dict(zip(pd.read_parquet(ws / "manifests/split.parquet")["image_id"], painting_files(ws)))
    a, b = frame.iloc[0], frame.iloc[-1]
    paths = [str(files[x["image_id"]]) for x in (a, b)]
    expected = float(np.linalg.norm(np.asarray(a["embedding"], np.float64) - np.asarray(b["embedding"], np.float64)))
    return paths, expected


def test_compare_matches_the_workspace_embeddings(evaluated_run):
    (a, b), expected = _two_paintings(evaluated_run)
    result = runner.invoke(app, ["compare", a, b, "--json", "--device", "cpu", "-w", str(evaluated_run)])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert set(verdict) == {"distance", "threshold", "same_artist_probability", "same_artist", "run", "words"}
    assert verdict["distance"] == pytest.approx(expected, abs=1e-3)
    assert 0 <= verdict["same_artist_probability"] <= 1 and verdict["run"] == "r"
    assert verdict["same_artist"] == (verdict["distance"] <= verdict["threshold"])


def test_export_then_compare_without_the_workspace(evaluated_run, tmp_path, monkeypatch):
    (a, b), _ = _two_paintings(evaluated_run)
    model = tmp_path / "painter.pt"
    assert runner.invoke(app, ["export", "r", str(model), "-w", str(evaluated_run)]).exit_code == 0
    with_ws = json.loads(runner.invoke(app, ["compare", a, b, "--json", "--device", "cpu", "-w", str(evaluated_run)]).stdout)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    result = runner.invoke(app, ["compare", a, b, "--model", str(model), "--json", "--device", "cpu", "--sheet", "v.png"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == with_ws
    assert (empty / "v.png").exists()


def test_compare_errors_are_one_line(evaluated_run, tmp_path):
    (a, _), _ = _two_paintings(evaluated_run)
    (tmp_path / "bad.jpg").write_bytes(b"not an image at all")
    bad = runner.invoke(app, ["compare", a, str(tmp_path / "bad.jpg"), "--device", "cpu", "-w", str(evaluated_run)])
    assert bad.exit_code == 2 and bad.output.strip() == f"Error: cannot read {tmp_path / 'bad.jpg'}: not an image: cannot identify image file"
    missing = runner.invoke(app, ["compare", a, str(tmp_path / "nope.jpg"), "-w", str(evaluated_run)])
    assert missing.exit_code == 2 and "nope.jpg does not exist" in missing.output
    empty = runner.invoke(app, ["compare", a, a, "-w", str(tmp_path / "nothing")])
    assert empty.exit_code == 2 and "no trained run" in empty.output
    (evaluated_run / "runs/r/calibration.json").rename(evaluated_run / "runs/r/calibration.bak")
    try:
        uncalibrated = runner.invoke(app, ["compare", a, a, "-w", str(evaluated_run)])
        assert uncalibrated.exit_code == 2 and "run `pbn eval --run r` first" in uncalibrated.output
    finally:
        (evaluated_run / "runs/r/calibration.bak").rename(evaluated_run / "runs/r/calibration.json")


def test_runs_lists_the_run_with_its_figures(evaluated_run):
    result = runner.invoke(app, ["runs", "--json", "-w", str(evaluated_run)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    metrics = json.loads((evaluated_run / "runs/r/eval/test/metrics.json").read_text())
    assert (row["run"], row["mode"], row["backbone"], row["epochs"]) == ("r", "triplet", "compact", 1)
    assert row["test_triplet_accuracy"] == metrics["triplet_accuracy"]
    table = runner.invoke(app, ["runs", "-w", str(evaluated_run)])
    assert table.exit_code == 0 and "compact" in table.output


def test_search_finds_neighbours_and_leaves_the_query_out(evaluated_run, tmp_path):
    (a, _), _ = _two_paintings(evaluated_run)
    args = ["search", a, "-k", "5", "--json", "--device", "cpu", "-w", str(evaluated_run)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    query_id = pd.read_parquet(evaluated_run / "runs/r/eval/test/embeddings.parquet").iloc[0]["image_id"]
    ids = [n["image_id"] for n in out["neighbours"]]
    assert len(ids) == 5 and query_id not in ids
    distances = [n["distance"] for n in out["neighbours"]]
    assert distances == sorted(distances)
    assert sum(n for _, n in out["vote"]) == 5
    stores = [p for p in (evaluated_run / "embeddings").iterdir() if p.is_dir()]
    assert len(stores) == 1  # the run's store, which eval began and search completed
    before = {p: p.stat().st_mtime_ns for p in stores[0].glob("part-*.parquet")}
    again = runner.invoke(app, [*args[:-2], "--split", "test", "--sheet", str(tmp_path / "s.png"), "-w", str(evaluated_run)])
    assert again.exit_code == 0, again.output
    assert {n["split"] for n in json.loads(again.stdout)["neighbours"]} == {"test"}
    assert {p: p.stat().st_mtime_ns for p in stores[0].glob("part-*.parquet")} == before  # embeddings reused
    assert (tmp_path / "s.png").exists()
    bad = runner.invoke(app, ["search", a, "--split", "nope", "-w", str(evaluated_run)])
    assert bad.exit_code == 2 and "--split must be one of all, train, val, calib, test" in bad.output


class _CtrlCAtStep(Progress):
    """Stands in for the person at the terminal: Ctrl-C once, after training step ``at`` (counted from 1)."""

    def __init__(self, at: int):
        self.at, self.steps = at, 0

    def advance(self, n: int = 1) -> None:
        self.steps += n
        if self.steps >= self.at:
            raise KeyboardInterrupt


def test_ctrl_c_mid_epoch_new_weights_are_not_judged_by_an_old_calibration(workspace_copy, tmp_path):
    """Train, eval, resume, Ctrl-C mid-epoch: last.pt keeps the epoch number but not the weights eval calibrated."""
    ws = Workspace(workspace_copy)
    config = resolve("quick", "triplet", {"input_size": 32, "embedding_dim": 16, "batch_size": 8, "epochs": 1,
                                          "device": "cpu"})
    config.log_every = 1  # report every step, so the interruption lands after the first one
    train(ws, config, run_name="c")
    assert invoke("eval", "--run", "c", "--checkpoint", "last", "--device", "cpu", "-w", ws.root).exit_code == 0
    with pytest.raises(PbnError, match="interrupted; run c saved at epoch 2, step 1"):
        train(ws, config, run_name="c", resume=True, changes={"epochs": 2}, progress=_CtrlCAtStep(1))
    state = checkpoint.load(ws.runs / "c/checkpoints/last.pt")
    assert (state["epoch"], state["step"]) == (1, 1)  # the epoch eval saw, with other weights
    a, b = _painting_paths(ws.root)
    for command in (["compare", a, b], ["search", a]):
        result = invoke(*command, "--run", "c", "--checkpoint", "last", "--device", "cpu", "-w", ws.root)
        assert result.exit_code == 2
        assert one_error_line(result.output) == (
            "Error: run c has no calibration for the weights of its last checkpoint (epoch 1, changed since the last "
            "eval); run `pbn eval --run c --checkpoint last` first")
    assert invoke("eval", "--run", "c", "--checkpoint", "last", "--device", "cpu", "-w", ws.root).exit_code == 0
    assert invoke("compare", a, b, "--run", "c", "--checkpoint", "last", "--device", "cpu", "-w", ws.root).exit_code == 0
