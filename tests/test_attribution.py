"""Who painted it: calibration measured (ECE), the hand score and its open-set probabilities against naive loops,
the known/unknown protocol, the calibration split, the evidence, and `pbn attribute` at the command line."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.evaluation.attribution import attribution_figures, divisions
from pbn_cli.inference import evidence as ev
from pbn_cli.model import attribution as A
from pbn_cli.model import calibration
from pbn_cli.stages.split import assign_splits

runner = CliRunner()


def test_ece_by_hand():
    p = np.array([0.05, 0.15, 0.18, 0.62, 0.95, 0.97])
    y = np.array([0, 1, 0, 1, 1, 1], bool)
    # bins [0, .1): p .05, y 0 -> gap .05; [.1, .2): p .165, y .5 -> gap .335; [.6, .7): .62 vs 1 -> .38;
    # [.9, 1]: .96 vs 1 -> .04; weights 1/6, 2/6, 1/6, 2/6
    expected = (0.05 + 2 * 0.335 + 0.38 + 2 * 0.04) / 6
    assert calibration.expected_calibration_error(p, y) == pytest.approx(expected)
    w = np.array([1, 1, 1, 1, 0, 0], float)  # weights: the last two pairs left out
    assert calibration.expected_calibration_error(p, y, w) == pytest.approx((0.05 + 2 * 0.335 + 0.38) / 4)
    assert calibration.expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0], bool)) == 0.0


def test_the_calibration_split_holds_whole_artists_never_trained_on():
    ids = pd.Series([f"{a}-{k}.jpg" for a in range(60) for k in range(8)])
    artists = pd.Series([f"artist {a}" for a in range(60) for _ in range(8)])
    split = assign_splits(ids, artists, 0.2, 0.1, seed=3, calib_artists=0.1)
    by_artist = split.groupby(artists).agg(set)
    assert all(len(s) == 1 for s in by_artist[by_artist.map(lambda s: "calib" in s)])  # whole artists
    calib, train = set(artists[split == "calib"]), set(artists[split.isin(["train", "val"])])
    assert len(calib) >= 3 and not calib & train and not calib & set(artists[split == "test"])
    few = assign_splits(ids[:120], artists[:120], 0.2, 0.1, seed=3, calib_artists=0.01)  # 15 artists: at least 3
    assert len(set(artists[:120][few == "calib"])) == 3


def test_unknown_hands_are_learned_from_artists_never_trained_on(tmp_path, evaluated_run):
    """The attribution's open-set probabilities are fitted on calib episodes: no training artist among them. The
    verdict's map weighs the calib artists half (the other half: the training artists' held-out paintings)."""
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.data.cache import CacheData
    from pbn_cli.evaluation.evaluate import _calibration_splits, _hands_split

    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    assert runner.invoke(app, ["split", "--force", "--calib-artists", "0.2", "--val-fraction", "0.4",
                               "-w", str(ws)]).exit_code == 0
    data = CacheData(Workspace(ws))
    trained = set(data.split("train").artists) | set(data.split("val").artists)
    hands = _hands_split(data)
    assert hands == "calib" and not set(data.split(hands).artists) & trained
    assert _calibration_splits(data) == ["val", "calib"]
    val, calib = data.split("val"), data.split("calib")
    rng = np.random.default_rng(0)
    emb = {"val": rng.normal(size=(len(val), 4)), "calib": rng.normal(size=(len(calib), 4)) * 3}
    alone = calibration.fit_parts([(emb["calib"], calib.artists)], 0)
    twice = calibration.fit_parts([(emb["calib"], calib.artists), (emb["calib"], calib.artists)], 0)
    assert twice["platt_a"] == pytest.approx(alone["platt_a"]) and twice["threshold"] == pytest.approx(alone["threshold"])
    both = calibration.fit_parts([(emb["val"], val.artists), (emb["calib"], calib.artists)], 0)
    assert both["platt_a"] != pytest.approx(alone["platt_a"])


def _att(dim=6, seed=0):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(60, dim)).astype(np.float32)
    return A.fit(train, [f"t{k % 6}" for k in range(60)], [f"bg{k}" for k in range(60)]), rng


def test_hand_scores_equal_a_naive_loop():
    att, rng = _att()
    gallery = rng.normal(size=(12, 6)).astype(np.float32)
    artists = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 3)
    ids = np.array([f"g{k}" for k in range(12)])
    queries = rng.normal(size=(4, 6)).astype(np.float32)
    hands = A.known(att, att.whiten(gallery), artists, ids)
    s = A.scores(hands, att.whiten(queries), ["q0", "q1", "q2", "g3"])  # the last query is gallery painting g3
    zg, zq, zb = att.whiten(gallery), att.whiten(queries), att.background
    for qi in range(4):
        for ai, name in enumerate(["a", "b", "c"]):
            keep = (artists == name) & (ids != ["q0", "q1", "q2", "g3"][qi])
            proto = zg[keep].mean(0)
            cos = float(zq[qi] @ (proto / np.linalg.norm(proto)))
            others = [float(zq[qi] @ z) for z, who, i in zip(zg, artists, ids) if who != name and i != "g3" * (qi == 3)]
            others += [float(zq[qi] @ z) for z in zb]
            r = np.mean(sorted(others, reverse=True)[: A.BACKGROUND_K])
            assert s[qi, ai] == pytest.approx(cos - r, abs=1e-5), (qi, name)


def test_probabilities_and_unknown_hand():
    att, rng = _att()
    att.open_set = (10.0, 0.1)
    s = np.array([[0.5, 0.0, -0.2], [-0.3, -0.4, -0.5]])
    p, unknown = A.probabilities(att, s)
    logits = 10 * np.c_[s, np.full(2, 0.1)]
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.allclose(p, expected[:, :3]) and np.allclose(unknown, expected[:, 3])
    # a query far from every known hand: "unknown hand"
    centres = rng.normal(size=(3, 6)) * 3
    gallery = np.concatenate([c + 0.1 * rng.normal(size=(4, 6)) for c in centres]).astype(np.float32)
    artists = np.repeat(["a", "b", "c"], 4)
    att = A.fit(np.concatenate([gallery, rng.normal(size=(30, 6))]).astype(np.float32), ["x"] * 42,
                [f"t{k}" for k in range(42)])
    att.open_set = (20.0, 0.0)
    hands = A.known(att, att.whiten(gallery), artists, [f"g{k}" for k in range(12)])
    near = A.rank(att, hands, gallery[0] + 0.01)
    far = A.rank(att, hands, -centres.sum(0))
    assert near.artists[0] == "a" and not near.unknown
    assert far.unknown and far.unknown_probability > far.probabilities[0]


def test_a_hand_with_one_painting_is_scored_and_never_from_nothing():
    att, rng = _att()
    gallery = rng.normal(size=(5, 6)).astype(np.float32)
    hands = A.known(att, att.whiten(gallery), ["a", "a", "a", "a", "solo"], [f"g{k}" for k in range(5)])
    s = A.scores(hands, att.whiten(gallery), [f"g{k}" for k in range(5)])
    assert np.isfinite(s[:4]).all()  # a's paintings, each left out of a: a has three others
    assert np.isinf(s[4, 1]) and np.isfinite(s[4, 0])  # solo's own painting leaves solo with nothing
    ranked = A.rank(att, hands, gallery[4], "g4")
    assert list(ranked.artists) == ["a"]


def test_open_set_probabilities_are_fitted_on_episodes():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 6)) * 2
    emb = np.concatenate([c + 0.3 * rng.normal(size=(6, 6)) for c in centres]).astype(np.float32)
    artists = np.repeat([f"h{k}" for k in range(8)], 6)
    att = A.fit(rng.normal(size=(40, 6)).astype(np.float32), ["x"] * 40, [f"t{k}" for k in range(40)])
    beta, t = A.fit_open_set(att, emb, artists, [f"p{k}" for k in range(48)])
    assert beta > 1
    att.open_set = (beta, t)
    hands = A.known(att, att.whiten(emb[:24]), artists[:24], [f"p{k}" for k in range(24)])
    known = A.rank(att, hands, emb[2], "p2")
    stranger = A.rank(att, hands, emb[40], "p40")
    assert known.artists[0] == "h0" and known.probabilities[0] > 0.5
    assert stranger.unknown


def test_protocol_figures_equal_a_naive_count():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(8, 6)) * 1.5
    emb = np.concatenate([c + 0.5 * rng.normal(size=(6, 6)) for c in centres]).astype(np.float32)
    artists = np.repeat([f"h{k}" for k in range(8)], 6)
    ids = np.array([f"p{k}" for k in range(48)])
    att = A.fit(rng.normal(size=(40, 6)).astype(np.float32), ["x"] * 40, [f"t{k}" for k in range(40)])
    att.open_set = (15.0, 0.0)
    figures = attribution_figures(emb, artists, ids, att, seed=0, n=4, replicates=20)
    top1, knn = [], []
    for known, g, gl, q, ql, u in divisions(artists, 0, 4):
        hands = A.known(att, att.whiten(emb[g]), artists[g], ids[g])
        right = 0
        for qi in q:
            row = A.scores(hands, att.whiten(emb[[qi]]), [ids[qi]])[0]
            right += hands.names[int(np.argmax(row))] == artists[qi]
        top1.append(right / len(q))
        votes = []
        for qi in q:
            d = ((emb[g] / np.linalg.norm(emb[g], axis=1, keepdims=True)) @ (emb[qi] / np.linalg.norm(emb[qi])))
            near = list(np.argsort(-d, kind="stable")[:10])
            counts = pd.Series(gl[near]).value_counts()
            best = counts[counts == counts.max()].index
            votes.append(next(gl[n] for n in near if gl[n] in best) == known.tolist().index(artists[qi]))
        knn.append(np.mean(votes))
    assert figures["attribution_top1"] == pytest.approx(np.mean(top1))
    assert figures["attribution_knn_vote_top1"] == pytest.approx(np.mean(knn))
    assert 0.5 <= figures["open_set_auroc"] <= 1 and figures["attribution_divisions"] == 4


def test_a_region_copied_from_the_other_painting_is_the_strongest_match(tmp_path, evaluated_run):
    """A painting holding a patch of another: the strongest pair of regions joins the patch to where it came from."""
    from pbn_cli.core.device import select_device
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.model import trained

    model = trained.from_run(Workspace(evaluated_run), "r")
    rng = np.random.default_rng(0)
    other = (rng.uniform(size=(192, 192, 3)) * 255).astype(np.uint8)
    noise = np.kron(rng.uniform(size=(24, 24, 3)), np.ones((8, 8, 1)))  # coarse blocks: another "hand"
    first = (np.clip(noise * 255, 0, 255)).astype(np.uint8)
    first[120:192, 0:72] = other[120:192, 120:192]  # copied on the tiles' grid (5 tiles of 32 px a side, 40 apart):
    # bottom right of other, bottom left here
    paths = [tmp_path / "first.png", tmp_path / "other.png"]
    for path, pixels in zip(paths, (first, other)):
        Image.fromarray(pixels).save(path)
    device = select_device("cpu")
    a, b = (ev.tiles(model, p, device) for p in paths)
    assert np.abs(b.whole - model.embed_one(model.read(paths[1]), device)).max() < 1e-6  # b as compare sees it
    e = ev.evidence(a, b)
    (i, j, _), *_ = e.strongest(3)
    for tiles, box, bottom_left in ((a, a.boxes[i], True), (b, b.boxes[j], False)):
        top, left, size = box
        half = tiles.pixels.shape[0] / 2
        assert top + size / 2 > half and (left + size / 2 < half) == bottom_left, (tiles.name, box)
    ev.evidence_sheet(e, tmp_path / "e.png", "test")
    assert Image.open(tmp_path / "e.png").size[0] > 600


def test_the_heat_is_each_regions_similarity_to_the_other_painting_whole():
    """heat_a[t] = cos(tile t of a, b whole), and a pixel's heat averages the tiles over it."""
    pixels = np.zeros((4, 4, 3), np.uint8)
    boxes = np.array([[0, 0, 2], [0, 2, 2], [2, 0, 2], [2, 2, 2]])
    a = ev.Tiles("a", pixels, boxes, np.array([[1.0, 0], [0, 1], [1, 1], [-1, 0]]), np.array([1.0, 1]))
    b = ev.Tiles("b", pixels, boxes[:2], np.array([[2.0, 0], [0, 3]]), np.array([3.0, 0]))
    e = ev.evidence(a, b)
    assert e.heat_a == pytest.approx([1, 0, 2**-0.5, -1])
    assert e.heat_b == pytest.approx([2**-0.5, 2**-0.5])
    assert e.similarity == pytest.approx(np.array([[1, 0], [0, 1], [2**-0.5, 2**-0.5], [-1, 0]]))
    assert a.heat(e.heat_a)[0, 0] == pytest.approx(1) and a.heat(e.heat_a)[3, 3] == pytest.approx(-1)
    assert e.strongest(2) == [(0, 0, pytest.approx(1)), (1, 1, pytest.approx(1))]


def test_attribute_at_the_command_line(tmp_path, evaluated_run):
    from serving import outside_painting, painting_files

    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    query = outside_painting(ws, tmp_path)
    result = runner.invoke(app, ["attribute", str(query), str(painting_files(ws)[0]), "-k", "3", "--json", "--sheet",
                                 str(tmp_path / "s.png"), "--evidence", str(tmp_path / "e.png"), "-w", str(ws)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["paintings"]) == 2 and all(len(p["hands"]) == 3 for p in out["paintings"])
    for p in out["paintings"]:
        probs = [h["probability"] for h in p["hands"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) + p["unknown_hand_probability"] <= 1 + 1e-9
        assert p["answer"] == ("unknown hand" if p["unknown_hand"] else p["hands"][0]["artist"])
    assert (tmp_path / "s.png").exists() and (tmp_path / "e.png").exists()
    assert runner.invoke(app, ["attribute", str(query), "-w", str(ws)]).stdout.count("hand 1") == 1


@pytest.mark.parametrize("case", ["not an image", "empty workspace", "empty split"])
def test_bad_attribute_input_is_one_line(tmp_path, evaluated_run, case):
    from serving import painting_files

    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    query = painting_files(ws)[0]
    if case == "not an image":
        query = tmp_path / "notes.jpg"
        query.write_text("not a painting\n" * 5)
        args, message = [str(query)], "notes.jpg: not an image"
    elif case == "empty workspace":
        args, message = [str(query), "-w", str(tmp_path / "nothing")], "no trained run"
    else:
        assert runner.invoke(app, ["split", "--force", "--calib-artists", "0", "-w", str(ws)]).exit_code == 0
        args, message = [str(query), "--among", "calib"], "--among calib: the workspace has no paintings"
    result = runner.invoke(app, ["attribute", *args, *([] if case == "empty workspace" else ["-w", str(ws)])])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in result.output
