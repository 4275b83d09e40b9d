"""eval: outputs, agreement with independent code, calibration, baseline, determinism."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from pbn_cli.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_workspace):
    import shutil

    ws = tmp_path_factory.mktemp("eval") / "ws"
    shutil.copytree(tiny_workspace, ws)
    train = runner.invoke(app, ["train", "--preset", "quick", "--input-size", "32", "--embedding-dim", "16", "--batch-size", "16",
                                "--epochs", "2", "--device", "cpu", "--run", "r", "-w", str(ws)])
    assert train.exit_code == 0, train.output
    base = runner.invoke(app, ["eval", "--baseline", "color-hist", "-w", str(ws)])
    assert base.exit_code == 0, base.output
    result = runner.invoke(app, ["eval", "--device", "cpu", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    return ws, result.output


def test_eval_writes_everything(evaluated):
    ws, output = evaluated
    folder = ws / "runs/r/eval/test"
    for name in ("embeddings.parquet", "metrics.json", "report.md", "roc.png", "distances.png", "triplets.png",
                 "errors_different.png", "errors_same.png", "map.png", "curves.png"):
        assert (folder / name).exists(), name
    m = json.loads((folder / "metrics.json").read_text())
    for key in ("triplet_accuracy", "reference_batch4_accuracy", "pair_auc", "precision_at_1", "map_at_r",
                "verification_accuracy", "eer", "threshold", "n_paintings", "n_artists", "n_triplets", "n_pairs", "n_groups"):
        assert key in m
    for key in ("triplet_accuracy", "pair_auc", "precision_at_1", "map_at_r", "verification_accuracy", "eer"):
        lo, hi = m[f"{key}_ci"]
        assert lo <= m[key] <= hi or np.isclose(lo, m[key]) or np.isclose(hi, m[key]), key
    assert "color-hist baseline" in output
    calib = json.loads((ws / "runs/r/calibration.json").read_text())["best"]
    assert calib["epoch"] == m["epoch"] and calib["threshold"] == pytest.approx(m["threshold"])
    report = (folder / "report.md").read_text()
    assert "![" in report and "triplet accuracy" in report and "colour-histogram baseline" in report
    assert Image.open(folder / "triplets.png").width > 400


def test_metrics_agree_with_independent_code(evaluated):
    ws, _ = evaluated
    folder = ws / "runs/r/eval/test"
    m = json.loads((folder / "metrics.json").read_text())
    frame = pd.read_parquet(folder / "embeddings.parquet")
    emb = np.stack(frame["embedding"].to_numpy()).astype(np.float64)
    artists = frame["artist"].to_numpy()
    d = np.sqrt(((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1))
    iu = np.triu_indices(len(emb), 1)  # fewer than 1,800 paintings: one group, every pair
    same = artists[iu[0]] == artists[iu[1]]
    assert m["pair_auc"] == pytest.approx(roc_auc_score(same, -d[iu]), abs=1e-4)
    np.fill_diagonal(d, np.inf)
    p1, aps = [], []
    for q in range(len(emb)):
        r = (artists == artists[q]).sum() - 1
        if r == 0:
            continue
        ranked = np.lexsort((np.arange(len(emb)), d[q]))[:r]
        rel = artists[ranked] == artists[q]
        p1.append(rel[0])
        aps.append(sum(rel[: k + 1].sum() / (k + 1) for k in range(r) if rel[k]) / r)
    assert m["precision_at_1"] == np.mean(p1)
    assert m["map_at_r"] == pytest.approx(np.mean(aps), abs=1e-4)
    rng = np.random.default_rng(123)  # an independent estimate from other random triplets
    hits = []
    names = sorted({a for a in artists if (artists == a).sum() >= 2})
    everyone = sorted(set(artists))
    for _ in range(20000):
        a = names[rng.integers(len(names))]
        others = [x for x in everyone if x != a]
        n = others[rng.integers(len(others))]
        i, j = rng.choice(np.flatnonzero(artists == a), 2, replace=False)
        k = rng.choice(np.flatnonzero(artists == n))
        hits.append(d[i, j] < d[i, k])
    assert abs(m["triplet_accuracy"] - np.mean(hits)) < 4 * np.sqrt(0.25 / 20000) * 2


def test_eval_is_deterministic(evaluated):
    ws, _ = evaluated
    first = json.loads((ws / "runs/r/eval/test/metrics.json").read_text())
    again = runner.invoke(app, ["eval", "--device", "cpu", "-w", str(ws)])
    assert again.exit_code == 0
    assert json.loads((ws / "runs/r/eval/test/metrics.json").read_text()) == first


def test_baseline_is_stored_apart(evaluated):
    ws, _ = evaluated
    m = json.loads((ws / "baselines/color-hist/test/metrics.json").read_text())
    assert m["baseline"] == "color-hist" and 0 <= m["triplet_accuracy"] <= 1
    assert not (ws / "runs/color-hist").exists()


def test_eval_without_a_run_is_one_line(tmp_path, tiny_workspace):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(tiny_workspace, ws)
    result = runner.invoke(app, ["eval", "-w", str(ws)])
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: no trained run in {ws}; train one with `pbn train`"
