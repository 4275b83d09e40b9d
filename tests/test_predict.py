"""predict: every pair's distance as the embeddings say, Kaggle's format, input order, clean failures."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.core.errors import InputError
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.paths import image_root
from pbn_cli.inference.pairs import pair_distances, read_pairs
from pbn_cli.answers.calibration import probability

runner = CliRunner()


def _naive(emb, a, b):
    return np.array([np.linalg.norm(emb[i].astype(np.float64) - emb[j]) for i, j in zip(a, b)])


@pytest.mark.parametrize("n_images, dim, tile, grouped", [
    (300, 64, 1024, True),  # Kaggle-like: pairs within groups, matrix products
    (300, 64, 7, True),  # many tiles
    (2000, 32, 64, False),  # pairs spread thinly: gathered dot products
    (70_000, 4, 1024, False),  # more images than 16-bit codes
    (500, 16, 1024, True),  # all embeddings close together, far from the origin (an untrained model)
])
def test_pair_distances_match_a_naive_loop(n_images, dim, tile, grouped):
    rng = np.random.default_rng(n_images)
    emb = rng.standard_normal((n_images, dim)).astype(np.float32)
    if n_images == 500:
        emb = (emb * 1e-3 + 5).astype(np.float32)
    if grouped:
        groups = rng.integers(0, 3, n_images)
        a = rng.integers(0, n_images, 20_000)
        b = np.array([rng.choice(np.flatnonzero(groups == groups[i])) for i in a[:2000]] * 10)
    else:
        a, b = rng.integers(0, n_images, 20_000), rng.integers(0, n_images, 20_000)
    a, b = a.astype(np.int32), b.astype(np.int32)
    a[:5] = b[:5]  # a painting with itself: distance 0
    got = pair_distances(emb, a, b, tile=tile)
    assert got.dtype == np.float32 and got.shape == a.shape
    expected = _naive(emb, a, b)
    np.testing.assert_allclose(got, expected, atol=1e-3 * expected.mean(), rtol=1e-3)
    assert np.all(got[:5] < 1e-3 * expected.mean())
    assert len(pair_distances(emb, a[:0], b[:0])) == 0


def test_read_pairs_by_position(tmp_path):
    csv = tmp_path / "pairs.csv"
    csv.write_text('id,left,right,extra\n7,a.jpg,b.jpg,x\n3,"c, d.jpg",a.jpg,y\n9,b.jpg,a.jpg,z\n')
    pairs = read_pairs(csv)
    assert pairs.header and pairs.index.to_pylist() == [7, 3, 9]
    assert pairs.names == ["a.jpg", "c, d.jpg", "b.jpg"] or set(pairs.names) == {"a.jpg", "b.jpg", "c, d.jpg"}
    assert [pairs.names[i] for i in pairs.first] == ["a.jpg", "c, d.jpg", "b.jpg"]
    assert [pairs.names[i] for i in pairs.second] == ["b.jpg", "a.jpg", "a.jpg"]
    bare = tmp_path / "bare.csv"
    bare.write_text("0,a.jpg,b.jpg\nx1,b.jpg,c.jpg\n")
    pairs = read_pairs(bare)
    assert not pairs.header and pairs.index.to_pylist() == ["0", "x1"]  # not all integers: kept as text


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"index,image1,image2\n", "has no pairs"),
    (b"index,image1\n0,a.jpg\n", "needs three columns"),
    (b"index,image1,image2\n0,a.jpg,b.jpg\n1,a.jpg\n", "not a readable pairs CSV"),
    (b"index,image1,image2\n0,\xff\xfe.jpg,b.jpg\n", "not a readable pairs CSV"),
    (b"index,image1,image2\n0,a.jpg,b.jpg\n1,,b.jpg\n", "line 3 has an empty image name"),
])
def test_bad_pairs_csv_is_one_clean_error(tmp_path, content, message):
    csv = tmp_path / "pairs.csv"
    csv.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_pairs(csv)


def _test_split(ws):
    emb = pd.read_parquet(ws / "runs/r/eval/test/embeddings.parquet")
    split = pd.read_parquet(ws / "manifests/split.parquet").set_index("image_id")
    root = image_root(Workspace(ws))
    emb["path"] = [split.loc[i, "path"] for i in emb["image_id"]]
    return emb, root


def _all_pairs_csv(emb, path, extra=()):
    i, j = np.triu_indices(len(emb), 1)
    names = emb["path"].to_numpy()
    rows = [(k, names[x], names[y]) for k, (x, y) in enumerate(zip(i, j))]
    rows += [(len(rows) + k, a, b) for k, (a, b) in enumerate(extra)]
    order = np.random.default_rng(0).permutation(len(rows))  # not sorted by image
    pd.DataFrame([rows[k] for k in order], columns=["index", "image1", "image2"]).to_csv(path, index=False)
    return i, j


def test_predict_scores_every_pair_as_the_embeddings_say(evaluated_run, tmp_path):
    ws = evaluated_run
    emb, root = _test_split(ws)
    pairs_csv = tmp_path / "submission_info.csv"
    _all_pairs_csv(emb, pairs_csv)
    out = tmp_path / "submission.csv"
    result = runner.invoke(app, ["predict", str(pairs_csv), "--images", root, "-o", str(out), "--device", "cpu", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert f"{len(emb)} embedded now, 0 from the cache" in result.output
    assert out.read_text().splitlines()[0] == "index,sameArtist"
    sub, info = pd.read_csv(out), pd.read_csv(pairs_csv)
    assert sub["index"].tolist() == info["index"].tolist()  # input order
    assert sub["sameArtist"].between(0, 1).all()
    vec = {p: np.asarray(e, np.float64) for p, e in zip(emb["path"], emb["embedding"])}
    calib = json.loads((ws / "runs/r/calibration.json").read_text())["best"]
    d = np.array([np.linalg.norm(vec[a] - vec[b]) for a, b in zip(info["image1"], info["image2"])])
    np.testing.assert_allclose(sub["sameArtist"], probability(d, calib["platt_a"], calib["platt_b"]), atol=1e-3)

    again = runner.invoke(app, ["predict", str(pairs_csv), "--images", root, "-o", str(tmp_path / "again.csv"),
                                "--device", "cpu", "-w", str(ws)])
    assert again.exit_code == 0 and f"0 embedded now, {len(emb)} from the cache" in again.output
    assert (tmp_path / "again.csv").read_bytes() == out.read_bytes()


def test_missing_and_unreadable_images(evaluated_run, tmp_path):
    ws = evaluated_run
    emb, root = _test_split(ws)
    images = tmp_path / "images"
    images.mkdir()
    for p in emb["path"][:6]:
        shutil.copy(os.path.join(root, p), images / p)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (images / "empty.png").write_bytes(b"")
    names = list(emb["path"][:6])
    extra = [(names[0], "gone.jpg"), ("broken.jpg", names[1]), (names[2], "empty.png"), ("../escape.jpg", names[3])]
    pairs_csv = tmp_path / "pairs.csv"
    _all_pairs_csv(emb.iloc[:6], pairs_csv, extra)
    out = tmp_path / "sub.csv"
    args = ["predict", str(pairs_csv), "--images", str(images), "-o", str(out), "--device", "cpu", "-w", str(ws)]

    absent = runner.invoke(app, args)
    assert absent.exit_code == 2 and not out.exists()
    assert [line for line in absent.output.splitlines() if "Error" in line] == absent.output.splitlines()[-1:]
    assert "2 of the 10 images" in absent.output
    assert "gone.jpg (file missing)" in absent.output and "../escape.jpg (path escapes the image folder" in absent.output

    (images / "gone.jpg").write_bytes(b"GIF89a but nothing else")
    inside = tmp_path / "inside.csv"
    _all_pairs_csv(emb.iloc[:6], inside, extra[:3])
    unreadable = runner.invoke(app, ["predict", str(inside), *args[2:]])
    assert unreadable.exit_code == 2 and not out.exists()
    assert "3 of the 9 images" in unreadable.output and "cannot be read" in unreadable.output
    assert "empty.png (empty file (0 bytes))" in unreadable.output and "broken.jpg (" in unreadable.output

    filled = runner.invoke(app, [*args, "--missing", "fill"])
    assert filled.exit_code == 0, filled.output
    assert "4 images missing or unreadable; 4 pairs set to 0.5" in filled.output
    sub = pd.read_csv(out).set_index("index")
    info = pd.read_csv(pairs_csv).set_index("index")
    bad = info["image1"].isin(["broken.jpg", "../escape.jpg"]) | info["image2"].isin(["gone.jpg", "empty.png"])
    assert (sub.loc[bad, "sameArtist"] == 0.5).all() and bad.sum() == 4
    assert sub.loc[~bad, "sameArtist"].between(0, 1).all() and (sub.loc[~bad, "sameArtist"] != 0.5).all()


def test_predict_from_an_exported_model(evaluated_run, tmp_path):
    emb, root = _test_split(evaluated_run)
    model = tmp_path / "m.pt"
    assert runner.invoke(app, ["export", "r", str(model), "-w", str(evaluated_run)]).exit_code == 0
    pairs_csv = tmp_path / "pairs.csv"
    _all_pairs_csv(emb.iloc[:5], pairs_csv)
    out = tmp_path / "sub.csv"
    result = runner.invoke(app, ["predict", str(pairs_csv), "--images", root, "--model", str(model), "-o", str(out),
                                 "--device", "cpu", "-w", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 10
