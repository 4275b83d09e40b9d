"""SIGKILL a real `pbn` process during ingest, eval and predict, at seeded moments spread over its work.

After each kill: every Parquet file pbn would read is whole, `pbn status`
tells the truth, and running the command again ends exactly as a run that
was never disturbed. (Resize and train have their own kill tests in
tests/test_resize.py and tests/test_training.py.)
"""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from helpers import (
    every_parquet_readable,
    holds_a_lock,
    invoke,
    run_killed,
    start,
    wait_for,
)

from pbn_cli.core.workspace import Workspace
from pbn_cli.data.paths import image_root
from pbn_cli.model.store import read_chunk

SEED = 7


def _worktime(root, args, started=None) -> float:
    """Seconds an undisturbed `pbn ARGS` works after it has started (lock taken)."""
    proc = start(*args)
    assert wait_for(started or (lambda: holds_a_lock(root, proc.pid)), proc) or proc.poll() == 0
    t = time.monotonic()
    proc.communicate()
    assert proc.returncode == 0
    return time.monotonic() - t


def _delays(n: int, span: float) -> list[float]:
    """``n`` seeded moments spread over ``span`` seconds (one per equal slice)."""
    rng = np.random.default_rng(SEED)
    return [span * (k + rng.uniform()) / n for k in range(n)]


def test_ingest_killed_then_rerun_equals_undisturbed(tmp_path, quirky_set):
    csv = quirky_set / "train_info.csv"
    calm = tmp_path / "calm"
    span = _worktime(calm, ["ingest", csv, "-w", calm])
    want = pd.read_parquet(calm / "manifests/ingest.parquet")
    landed = []
    for k, delay in enumerate(_delays(3, span)):
        ws = tmp_path / f"killed{k}"
        landed.append(run_killed(ws, ["ingest", csv, "-w", ws], delay))
        every_parquet_readable(ws)
        status = invoke("status", "-w", ws, "--json")
        assert status.exit_code == 0, status.output
        ingest = json.loads(status.stdout)[0]
        assert ingest["state"] in ("not run", "up to date")
        if ingest["state"] == "up to date":  # finished before the kill: then it is whole
            assert pd.read_parquet(ws / "manifests/ingest.parquet").equals(want)
        assert invoke("ingest", csv, "-w", ws).exit_code == 0
        assert pd.read_parquet(ws / "manifests/ingest.parquet").equals(want)
        assert pd.read_parquet(ws / "manifests/ingest.rejected.parquet").equals(
            pd.read_parquet(calm / "manifests/ingest.rejected.parquet"))
    print("ingest kills that landed mid-run:", landed)
    assert any(landed), "every kill came too late to test anything"


def _figures(path) -> dict:
    m = json.loads(path.read_text())
    return {k: m[k] for k in ("triplet_accuracy", "pair_auc", "precision_at_1", "map_at_r", "threshold", "n_pairs")}


def test_eval_killed_never_leaves_a_torn_result(tmp_path, evaluated_run):
    want = _figures(evaluated_run / "runs/r/eval/test/metrics.json")
    calm = tmp_path / "calm"
    shutil.copytree(evaluated_run, calm)
    span = _worktime(calm, ["eval", "--device", "cpu", "-w", calm])
    assert _figures(calm / "runs/r/eval/test/metrics.json") == want  # eval is deterministic
    landed = []
    for k, delay in enumerate(_delays(2, span)):
        ws = tmp_path / f"killed{k}"
        shutil.copytree(evaluated_run, ws)
        shutil.rmtree(ws / "runs/r/eval")
        (ws / "runs/r/calibration.json").unlink()
        landed.append(run_killed(ws, ["eval", "--device", "cpu", "-w", ws], delay))
        every_parquet_readable(ws)
        metrics = ws / "runs/r/eval/test/metrics.json"
        if metrics.exists():
            assert _figures(metrics) == want
        calibration = ws / "runs/r/calibration.json"
        if calibration.exists():
            json.loads(calibration.read_text())
        assert invoke("runs", "-w", ws).exit_code == 0
        assert invoke("eval", "--device", "cpu", "-w", ws).exit_code == 0
        assert _figures(metrics) == want
    print("eval kills that landed mid-run:", landed)
    assert any(landed), "every kill came too late to test anything"


@pytest.fixture
def pairs_job(tmp_path, evaluated_run):
    """A copy of the evaluated workspace and a 1.2M-pair CSV over its test paintings."""
    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    shutil.rmtree(ws / "runs/r/predict", ignore_errors=True)
    emb = pd.read_parquet(ws / "runs/r/eval/test/embeddings.parquet")
    split = pd.read_parquet(ws / "manifests/split.parquet").set_index("image_id")
    names = np.array([split.loc[i, "path"] for i in emb["image_id"]])
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, len(names), (2, 1_200_000))
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"index": np.arange(len(i)), "image1": names[i], "image2": names[j]}).to_csv(pairs, index=False)
    root = image_root(Workspace(ws))
    return ws, pairs, root


def test_predict_killed_leaves_no_partial_submission(tmp_path, pairs_job):
    ws, pairs, root = pairs_job
    calm_out = tmp_path / "calm.csv"
    args = ["predict", pairs, "--images", root, "--device", "cpu", "-w", ws]
    assert invoke(*args, "-o", calm_out).exit_code == 0
    want = calm_out.read_bytes()
    shutil.rmtree(ws / "runs/r/predict")  # the embeddings again, too
    out = tmp_path / "sub.csv"

    def writing() -> bool:
        return any(out.parent.glob(f".{out.name}.tmp-*"))

    span = _worktime(ws, [*args, "-o", out], started=writing)
    out.unlink()
    shutil.rmtree(ws / "runs/r/predict")
    moments = [("embedding", lambda: (ws / "runs/r/predict/best").exists(), 0.0)]
    moments += [("writing", writing, d) for d in _delays(2, span)]
    kills = []
    for what, started, delay in moments:
        landed = run_killed(ws, [*args, "-o", out], delay, started)
        kills.append(landed)
        assert not out.exists() or out.read_bytes() == want, f"torn submission after a kill while {what}"
        every_parquet_readable(ws)
        if landed:
            out.unlink(missing_ok=True)
        result = invoke(*args, "-o", out)
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == want
        out.unlink()
    print("predict kills that landed mid-run:", kills)
    assert kills[0] and any(kills[1:]), "a kill came too late to test anything"


def _store(ws) -> dict:
    """The run's embedding store, chunk by chunk: {chunk file: (ids, digests, embeddings)}."""
    (folder,) = [p for p in (ws / "embeddings").iterdir() if p.is_dir()]
    out = {}
    for part in sorted(folder.glob("part-*.parquet")):
        out[part.name] = read_chunk(part)
    return out


def test_embedding_pass_killed_resumes_to_exactly_the_undisturbed_store(tmp_path, evaluated_run):
    """SIGKILL `pbn embed` at seeded moments (and right after its first chunk): every file is whole, and running it
    again embeds only what is missing and ends with the very store an undisturbed pass writes."""
    args = ["embed", "--chunk", "4", "--device", "cpu"]
    calm = tmp_path / "calm"
    shutil.copytree(evaluated_run, calm)
    shutil.rmtree(calm / "embeddings")
    span = _worktime(calm, [*args, "-w", calm])
    want = _store(calm)
    assert sum(len(ids) for ids, _, _ in want.values()) == 96 and len(want) == 24
    landed = []
    for k, (delay, first_chunk) in enumerate([(0.0, True), *[(d, False) for d in _delays(2, span)]]):
        ws = tmp_path / f"killed{k}"
        shutil.copytree(evaluated_run, ws)
        shutil.rmtree(ws / "embeddings")
        started = (lambda: any((ws / "embeddings").glob("*/part-*.parquet"))) if first_chunk else None
        landed.append(run_killed(ws, [*args, "-w", ws], delay, started))
        every_parquet_readable(ws)
        result = invoke(*args, "-w", ws)
        assert result.exit_code == 0, result.output
        got = _store(ws)
        assert list(got) == list(want)
        for name, (ids, digests, emb) in want.items():
            assert got[name][0] == ids and got[name][1] == digests and np.array_equal(got[name][2], emb), name
    print("embedding kills that landed mid-run:", landed)
    assert any(landed), "every kill came too late to test anything"
