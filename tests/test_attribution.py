"""Who painted it: calibration measured (ECE), the hand score and its open-set probabilities against naive loops,
the known/unknown protocol, the calibration split, the evidence, and `pbn attribute` at the command line."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.evaluation import attribution as E
from pbn_cli.inference import evidence as ev
from pbn_cli.answers import attribution as A
from pbn_cli.answers import attribution_fitting as F
from pbn_cli.answers import calibration
from pbn_cli.stages.split import assign_splits

runner = CliRunner()


@pytest.mark.parametrize("n", [40, 300])
def test_principal_directions_equal_the_svds(n):
    """Fewer paintings than dimensions (through their Gram matrix) and more (through the covariance): the same
    variances and, sign aside, the same directions as an SVD, and the same whitening (stored in float32)."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 8)) @ rng.normal(size=(8, 60)) * np.linspace(3, 0.1, 60) + rng.normal(size=(n, 60)) * 0.01
    mean, vt, lam = A.principal(x, components=30)
    _, sv, svd_vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    assert np.allclose(mean, x.mean(0))
    assert np.allclose(lam, (sv**2 / (n - 1))[:len(lam)], rtol=1e-8)
    assert np.allclose(np.abs((vt * svd_vt[:len(lam)]).sum(1)), 1, atol=1e-6)
    whitened = A.space(x, 0.5, basis=(mean, vt, lam)).whiten(x)
    assert np.allclose(whitened, A.normalise((x - x.mean(0)) @ (svd_vt[:len(lam)].T / (sv[:len(lam)]**2 / (n - 1))**0.5
                                                                  * np.sign((vt * svd_vt[:len(lam)]).sum(1)))), atol=1e-4)


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
    few = assign_splits(ids[:120], artists[:120], 0.2, 0.1, seed=3, calib_artists=0.01)  # 15 artists: 3
    assert len(set(artists[:120][few == "calib"])) == 3
    many = pd.Series([f"artist {a}" for a in range(100) for _ in range(3)])
    ids = pd.Series([f"{a}-{k}.jpg" for a in range(100) for k in range(3)])
    split = assign_splits(ids, many, 0.2, 0.1, seed=3, calib_artists=0.01)  # about 80 not in test: 8
    assert len(set(many[split == "calib"])) == 8


def test_unknown_hands_are_learned_from_artists_never_trained_on(tmp_path, evaluated_run):
    """The verdict's map weighs the calib artists half (the other half: the training artists' held-out paintings);
    calib holds whole artists never trained on, the unknown hands of attribution's episodes."""
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.data.cache import CacheData
    from pbn_cli.evaluation.fitting import calibration_splits

    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    assert runner.invoke(app, ["split", "--force", "--calib-artists", "0.2", "--val-fraction", "0.4",
                               "-w", str(ws)]).exit_code == 0
    data = CacheData(Workspace(ws))
    trained = set(data.split("train").artists) | set(data.split("val").artists)
    assert len(data.split("calib")) and not set(data.split("calib").artists) & trained
    assert calibration_splits(data) == ["val", "calib"]
    val, calib = data.split("val"), data.split("calib")
    rng = np.random.default_rng(0)
    emb = {"val": rng.normal(size=(len(val), 4)), "calib": rng.normal(size=(len(calib), 4)) * 3}
    alone = calibration.fit_parts([(emb["calib"], calib.artists)], 0)
    twice = calibration.fit_parts([(emb["calib"], calib.artists), (emb["calib"], calib.artists)], 0)
    assert twice["platt_a"] == pytest.approx(alone["platt_a"]) and twice["threshold"] == pytest.approx(alone["threshold"])
    both = calibration.fit_parts([(emb["val"], val.artists), (emb["calib"], calib.artists)], 0)
    assert both["platt_a"] != pytest.approx(alone["platt_a"])


def _att(dim=6, seed=0, power=0.25, k=A.BACKGROUND_K, aggregate="prototype"):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(60, dim)).astype(np.float32)
    sp = A.space(train, power, aggregate, k)
    return A.scoring_model(train, [f"t{k % 6}" for k in range(60)], [f"bg{k}" for k in range(60)],
                           spaces={kind: sp for kind in A.KINDS}), rng


@pytest.mark.parametrize("power,aggregate,k", [(0.25, "prototype", A.BACKGROUND_K), (0.0, "nearest", 0),
                                               (0.5, "nearest", A.BACKGROUND_K), (0.25, "blend", A.BACKGROUND_K)])
def test_hand_scores_equal_a_naive_loop(power, aggregate, k):
    att, rng = _att(power=power, k=k, aggregate=aggregate)
    gallery = rng.normal(size=(12, 6)).astype(np.float32)
    artists = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 3)
    ids = np.array([f"g{k}" for k in range(12)])
    queries = rng.normal(size=(4, 6)).astype(np.float32)
    q_ids = ["q0", "q1", "q2", "g3"]  # the last query is gallery painting g3
    s = A.scores(att, A.KnownHands.from_gallery(att, gallery, artists, ids), queries, q_ids)
    sp = att.spaces["new"]
    zg, zq, zb = sp.whiten(gallery), sp.whiten(queries), sp.whiten(att.background)
    for qi in range(4):
        for ai, name in enumerate(["a", "b", "c"]):
            keep = (artists == name) & (ids != q_ids[qi])
            proto = zg[keep].mean(0)
            prototype = float(zq[qi] @ (proto / np.linalg.norm(proto)))
            nearest = np.mean(sorted((zg[keep] @ zq[qi]).tolist(), reverse=True)[: A.NEAREST])
            hand = {"prototype": prototype, "nearest": nearest,
                    "blend": (1 - A.BLEND) * prototype + A.BLEND * nearest}[aggregate]
            others = [float(zq[qi] @ z) for z, who in zip(zb, att.background_artists) if who != name]
            r = np.mean(sorted(others, reverse=True)[:k]) if k else 0.0
            assert s[qi, ai] == pytest.approx(hand - r, abs=1e-5), (qi, name)


def test_the_background_term_equals_a_naive_loop():
    """r(q, not a), the mean of the k highest similarities to background paintings not by a, against its definition:
    ties, paintings left out (-inf), a query with none left, hands of the background that are not asked about and
    hands asked about that the background lacks."""
    rng = np.random.default_rng(3)
    for trial in range(30):
        pool = np.array([f"h{x}" for x in rng.integers(0, 6, 40)])
        names = rng.permutation(np.array(["h0", "h2", "h3", "h5", "h9"]))  # h9: not in the background; unsorted
        sims = np.round(rng.normal(size=(9, 40)), 1)
        sims[rng.random(sims.shape) < 0.3] = -np.inf
        sims[0] = -np.inf
        k = int(rng.integers(1, 12))
        got = A._background_term(sims, pool, names, k, block=4)
        for q in range(len(sims)):
            for a, name in enumerate(names):
                others = np.sort(sims[q][(pool != name) & np.isfinite(sims[q])])[::-1][:k]
                assert got[q, a] == pytest.approx(others.mean() if len(others) else 0.0), (trial, q, name)


def test_every_space_scored_in_one_pass_equals_each_scored_alone():
    """``choose_space`` scores every aggregate from one pass (the blend from the other two): the same scores as each
    space scored on its own."""
    att, rng = _att(aggregate="blend")
    gallery = rng.normal(size=(12, 6)).astype(np.float32)
    artists, ids = np.array(["a"] * 5 + ["b"] * 4 + ["c"] * 3), np.array([f"g{k}" for k in range(12)])
    queries, q_ids = rng.normal(size=(3, 6)).astype(np.float32), ["q0", "g2", "q2"]
    known = A.KnownHands.from_gallery(att, gallery, artists, ids)
    _, hands, r = A.score_parts(att, known, queries, q_ids, every_space=True)["new"]
    assert set(hands) == set(A.AGGREGATES)
    for aggregate in A.AGGREGATES:
        att.spaces = {kind: dataclasses.replace(sp, aggregate=aggregate) for kind, sp in att.spaces.items()}
        assert hands[aggregate] - r == pytest.approx(A.scores(att, known, queries, q_ids), abs=1e-6), aggregate


def _gaussian(rng, centres, per, prefix, spread):
    emb = np.repeat(centres, per, 0) + spread * rng.normal(size=(len(centres) * per, centres.shape[1]))
    return A.Paintings(emb, np.repeat([f"{prefix}{i}" for i in range(len(centres))], per),
                   [f"{prefix}-{i}-{rng.integers(1 << 30)}" for i in range(len(emb))])


def test_probabilities_fitted_with_5_known_hands_stay_calibrated_with_50():
    """Gaussian hands, whose truth is known: fitted on divisions of 10 artists (5 known), used with 50 known hands
    and 50 strangers, p(unknown hand) and p(top hand) stay calibrated."""
    rng = np.random.default_rng(0)
    dim, spread = 64, 2.0
    train = _gaussian(rng, rng.normal(size=(30, dim)), 10, "t", spread)
    calib = _gaussian(rng, rng.normal(size=(10, dim)), 10, "c", spread)
    att = F.fit_attribution(train, train.take(np.zeros(len(train.ids), bool)), calib, 0)
    centres = rng.normal(size=(50, dim))
    gallery, queries = _gaussian(rng, centres, 5, "n", spread), _gaussian(rng, centres, 6, "n", spread)
    strangers = _gaussian(rng, rng.normal(size=(50, dim)), 6, "u", spread)  # 600 queries: an ECE of fewer is noise
    known = A.KnownHands.from_gallery(att, gallery.emb, gallery.artists, gallery.ids)
    asked = np.r_[queries.emb, strangers.emb]
    p, p_unknown = A.probabilities(att, known, A.scores(att, known, asked, [""] * len(asked)))
    is_known = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    right = is_known & (known.names[p.argmax(1)] == np.r_[queries.artists, strangers.artists])
    assert 0.5 < right[is_known].mean() < 0.95  # neither hopeless nor trivial
    assert calibration.expected_calibration_error(p_unknown, ~is_known) < 0.1
    assert calibration.expected_calibration_error(p.max(1), right) < 0.1
    assert abs(p.max(1).mean() - right.mean()) < 0.05


def test_where_whitening_hurts_the_collection_keeps_the_raw_score():
    """Hands that differ along the directions of most variance, with noise in every other: whitening lifts the
    noise to the signal's size, so the per-collection choice keeps the raw embedding."""
    rng = np.random.default_rng(3)
    dim = 24
    centre = lambda n: np.c_[rng.normal(size=(n, 2)) * 4, np.zeros((n, dim - 2))]  # noqa: E731
    hands = centre(12)
    train, val = _gaussian(rng, hands, 8, "t", 0.5), _gaussian(rng, hands, 4, "t", 0.5)
    calib = _gaussian(rng, centre(8), 6, "c", 0.5)
    att = F.fit_attribution(train, val, calib, 0)
    assert att.spaces["new"].power == 0 and att.spaces["trained"].power == 0
    tried = att.fitted_on["tried"]["new"]
    assert max(tried.values()) == max(v for name, v in tried.items() if name.startswith("raw"))
    assert any(v < max(tried.values()) for name, v in tried.items() if "power 0.5" in name)


def test_another_space_is_chosen_only_when_every_painter_agrees_it_is_better():
    """The same advantage of quality on average (top-1 0.5 -> 0.6 over 6 painters' 20 queries each), once shared by
    every painter and once all from one of them: only the first is a reason to leave the default space."""

    class Hands:
        kinds, counts = np.zeros(2, int), np.full(2, 5)

    def episodes(right_per_painter):
        ep = F.Episodes()
        for painter, right in enumerate(right_per_painter):
            labels = np.zeros(20, int)
            s = np.where(np.arange(20)[:, None] < right, [1.0, 0.0], [0.0, 1.0])  # the first `right` queries right
            ep.add(s, Hands(), labels, np.full(20, f"p{painter}"))
        return ep

    default = episodes([10] * 6)
    assert F.clearly_better(episodes([12] * 6), default)
    assert not F.clearly_better(episodes([20, 10, 10, 10, 10, 12]), default)
    assert not F.clearly_better(episodes([10, 11] * 3), default)  # ahead by less than the margin
    assert F._space_quality(default, np.ones((3, 6))).tolist() == [F._space_quality(default)[0]] * 3


def test_episodes_with_both_kinds_of_hand_fit_the_offset_between_them():
    """Trained hands score 0.8 higher than new ones for the same likeness (their own space): only episodes where
    both kinds compete tell p(a | known) to take it off, and there a trained hand's few held-out paintings weigh as
    much as a new hand's many (per_hand)."""
    rng = np.random.default_rng(7)

    class Hands:
        def __init__(self, kinds):
            self.kinds, self.counts = np.asarray(kinds), np.full(len(kinds), 8)

    def add(ep, kinds, per_hand=False):
        hands = Hands(kinds)
        labels = np.r_[rng.integers(len(kinds), size=60), np.full(30, -1)]
        s = 0.4 * rng.normal(size=(90, len(kinds))) + 0.8 * hands.kinds
        s[np.arange(60), labels[:60]] += 1.0
        ep.add(s, hands, labels, labels.astype(str), 1.0, per_hand=per_hand)

    pure, mixed = F.Episodes(), F.Episodes()
    for _ in range(6):
        add(pure, [1, 1, 1, 1])
        add(pure, [0, 0, 0, 0])
        add(mixed, [1, 1, 0, 0], per_hand=True)
    alone, both = F.fit_open_set(pure), F.fit_open_set(pure, mixed)
    assert abs(alone.hand_weights[2]) < 1e-6 and both.hand_weights[2] < -1.0  # the offset: uninformed, then fitted
    s, kinds, counts, labels, _ = mixed.padded()
    k = labels >= 0
    right = {name: (A.hand_probabilities(m.hand_weights, s, kinds, counts)[k].argmax(1) == labels[k]).mean()
             for name, m in (("alone", alone), ("both", both))}
    assert right["both"] > right["alone"] + 0.05
    w = mixed.weights[0]
    known = mixed.labels[0] >= 0
    per = [w[known & (mixed.labels[0] == h)].sum() for h in range(4)]
    assert np.allclose(per, 0.5 / 4) and np.isclose(w[~known].sum(), 0.5)


def test_the_three_answers_are_each_reached():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(3, 6)) * 3
    gallery = np.concatenate([c + 0.1 * rng.normal(size=(4, 6)) for c in centres]).astype(np.float32)
    att, _ = _att()
    att.open_set = A.OpenSet(np.r_[20.0, 20.0, 0, 0, 4.0, 0, 0, 0, 0, -2.0])
    att.open_set.null = np.r_[0.0, 0.3, 0.0, 0.3]
    known = A.KnownHands.from_gallery(att, gallery, np.repeat(["a", "b", "c"], 4), [f"g{k}" for k in range(12)])
    near = A.rank(att, known, gallery[0] + 0.01)
    far = A.rank(att, known, -centres.sum(0) * 5)
    assert near.artists[0] == "a" and near.answer == A.NAMED and near.probabilities[0] >= near.name_at
    assert far.answer == A.UNKNOWN and far.unknown and far.unknown_probability >= A.UNKNOWN_AT
    att.open_set.name_at = np.r_[1.01, 1.01]  # no probability reaches it: the top hand is only "probably"
    assert A.rank(att, known, gallery[0] + 0.01).answer == A.PROBABLY
    assert [A.answer(0.9, 0.05, 0.8), A.answer(0.6, 0.3, 0.8), A.answer(0.3, 0.6, 0.8)] == [A.NAMED, A.PROBABLY,
                                                                                            A.UNKNOWN]
    # "unknown hand" needs p(unknown) to reach p(known), not just the top hand's share of it
    assert [A.answer(0.3, 0.45, 0.8), A.answer(0.3, 0.5, 0.8), A.answer(float("nan"), 0.1, 0.8)] == [
        A.PROBABLY, A.UNKNOWN, A.UNKNOWN]
    from pbn_cli.inference.attribute import Attribution, Candidate

    hand = Candidate("a", 1.0, 0.6, pd.DataFrame(columns=["image_id", "split", "cache_row"]))
    words = {v: Attribution("q.jpg", [hand], v, 0.2, 0.8).to_dict() for v in (A.NAMED, A.PROBABLY, A.UNKNOWN)}
    assert [w["answer"] for w in words.values()] == ["a", "probably a, uncertain", "unknown hand"]
    assert [(w["named"], w["unknown_hand"], w["verdict"]) for w in words.values()] == [
        (True, False, "named"), (False, False, "probably"), (False, True, "unknown hand")]
    assert all(w["named_from"] == 0.8 and w["unknown_hand_probability"] == 0.2 for w in words.values())
    reasons = {v: Attribution("q.jpg", [hand], v, 0.2, 0.8).reason for v in (A.NAMED, A.PROBABLY, A.UNKNOWN)}
    assert "0.60 reaches 0.80" in reasons[A.NAMED] and "below the 0.80 a name needs" in reasons[A.PROBABLY]
    assert "p(unknown hand) = 0.20" in reasons[A.PROBABLY] and "at least 0.5" in reasons[A.UNKNOWN]
    # a top hand below one half is the likeliest of the hands, not a probable one
    unlikely = Candidate("b", 0.5, 0.3, hand.closest)
    assert Attribution("q.jpg", [unlikely], A.PROBABLY, 0.45, 0.8).answer == "perhaps b, uncertain"
    assert Attribution("q.jpg", [unlikely], A.NAMED, 0.1, 0.2).answer == "b"


def test_a_probability_model_saved_with_one_slope_for_both_kinds_reads_as_the_same_model():
    rng = np.random.default_rng(9)
    old = np.r_[3.0, 5.0, 0.4, 0.2, 1.5, 0.3, -0.2, 0.7, -1.0, 0.1, 1.0, 0.05, 1.2, 0.8, 0.85]  # weights, null, levels
    model = A.OpenSet.from_array(old)
    assert len(model.known_weights) == A.KNOWN_WEIGHTS and model.known_weights[1] == 0.0
    assert np.array_equal(model.null, old[9:13]) and np.array_equal(model.name_at, old[13:])
    assert np.array_equal(A.OpenSet.from_array(model.to_array()).to_array(), model.to_array())
    s, kinds = rng.normal(size=(7, 5)), np.array([0, 1, 1, 0, 1])
    p, unknown = A.open_set_probabilities(model, s, kinds, np.full(5, 6))
    closed = A.softmax(A.hand_features(s, kinds, np.full(5, 6)) @ old[:4])  # the old model, by hand
    top = closed.argmax(1)
    best, trained = s[np.arange(7), top], kinds[top] == 1
    z = (best - np.where(trained, old[11], old[9])) / np.where(trained, old[12], old[10])
    chance = np.log(5) + np.log(0.5 * np.vectorize(math.erfc)(z / math.sqrt(2)))
    logit = np.c_[z, chance, chance * trained, trained, np.ones(7)] @ old[4:9]
    assert np.allclose(unknown, 1 - 1 / (1 + np.exp(-logit)))


@pytest.mark.parametrize("aggregate", A.AGGREGATES)
def test_a_query_the_gallery_holds_twice_is_scored_as_if_neither_copy_were_there(aggregate):
    att, rng = _att(aggregate=aggregate)
    gallery = rng.normal(size=(9, 6)).astype(np.float32)
    artists, ids = np.array(["a"] * 4 + ["b"] * 3 + ["c"] * 2), np.array([f"g{k}" for k in range(9)])
    query = gallery[[1]]
    copies = ("g1", "g5")  # one of a's paintings and one of b's are this very picture
    known = A.KnownHands.from_gallery(att, gallery, artists, ids)
    rest = ~np.isin(ids, copies)
    without = A.KnownHands.from_gallery(att, gallery[rest], artists[rest], ids[rest])
    assert A.scores(att, known, query, [copies]) == pytest.approx(A.scores(att, without, query, ["elsewhere"]))
    one = A.scores(att, known, query, ["g1"])  # one copy left out is not two: b's copy still counts for b
    assert one[0, 1] > A.scores(att, without, query, ["x"])[0, 1] + 0.01
    assert list(A.rank(att, known, query[0], copies).artists) == list(A.rank(att, without, query[0]).artists)


def test_a_hand_with_one_painting_is_scored_and_never_from_nothing():
    att, rng = _att()
    gallery = rng.normal(size=(5, 6)).astype(np.float32)
    known = A.KnownHands.from_gallery(att, gallery, ["a", "a", "a", "a", "solo"], [f"g{k}" for k in range(5)])
    s = A.scores(att, known, gallery, [f"g{k}" for k in range(5)])
    assert np.isfinite(s[:4]).all()  # a's paintings, each left out of a: a has three others
    assert np.isinf(s[4, 1]) and np.isfinite(s[4, 0])  # solo's own painting leaves solo with nothing
    assert list(A.rank(att, known, gallery[4], "g4").artists) == ["a"]


def test_ece_of_the_top_hand_equals_a_naive_loop_and_is_bootstrapped_over_artists():
    rng = np.random.default_rng(5)
    n = 300
    code = rng.integers(0, 12, n)
    known = rng.random(n) < 0.4
    top = rng.random(n)
    right = known & (rng.random(n) < top)
    w = np.where(known, 0.5 / known.sum(), 0.5 / (~known).sum())
    ans = E.Answers(np.where(known, (~right).astype(int), -1), top, 1 - top, right, right, top, right, w, code,
                    np.full(n, 0.8), np.zeros(n, bool))
    figures, pictures = E._figures(ans, "x_", 50, 0)
    naive = 0.0
    for b in range(10):
        inside = (np.minimum((top * 10).astype(int), 9) == b)
        if inside.any():
            naive += w[inside].sum() * abs((w * right)[inside].sum() / w[inside].sum()
                                           - (w * top)[inside].sum() / w[inside].sum())
    assert figures["x_ece"] == pytest.approx(naive / w.sum())
    lo, hi = figures["x_ece_ci"]
    assert lo < figures["x_ece"] < hi and hi - lo > 0.005  # resampled artists move it
    named = (top > 1 - top) & (top >= 0.8)
    assert figures["x_named_coverage"] == pytest.approx(w[named].sum() / w.sum())
    assert figures["x_named_precision"] == pytest.approx((w * right)[named].sum() / w[named].sum())
    assert figures["x_known_queries"] == known.sum() and len(pictures["curve"]) == len(E.LEVELS)


def test_workspace_protocol_counts_known_and_unknown_queries_and_never_asks_a_gallery_painting():
    rng = np.random.default_rng(6)
    dim = 16
    centres = rng.normal(size=(10, dim))
    train = _gaussian(rng, centres, 6, "t", 0.8)
    val = _gaussian(rng, centres, 2, "t", 0.8)
    calib = _gaussian(rng, rng.normal(size=(4, dim)), 4, "c", 0.8)
    test = _gaussian(rng, rng.normal(size=(5, dim)), 3, "x", 0.8)
    figures, pictures = E.workspace_figures(train, val, calib, test, seed=0, replicates=20)
    assert figures["workspace_hands"] == 10 and figures["workspace_gallery"] == 60
    assert figures["workspace_known_queries"] == 20 and figures["workspace_unknown_queries"] == 16 + 15
    assert figures["workspace_top1"] > 0.5 and 0.5 < figures["workspace_auroc"] <= 1
    # known and unknown queries weigh half each, and every painting the same on its side however often it was asked:
    # a test painting by every fold's model, a val or calib painting by its own fold's
    ans = E.workspace_answers(train, val, calib, test, 0, E.cross_fitted(train, val, calib, test, 0))
    names = E._codes(train, val, calib, test)
    per_painting = {names[c][0]: set() for c in np.unique(ans.code)}
    for c in np.unique(ans.code):
        per_painting[names[c][0]].add(round(ans.weight[ans.code == c].sum() / {"t": 2, "c": 4, "x": 3}[names[c][0]], 9))
    assert ans.weight[ans.known].sum() == pytest.approx(0.5) == ans.weight[~ans.known].sum()
    assert per_painting["c"] == per_painting["x"] and len(per_painting["c"]) == 1 and len(per_painting["t"]) == 1
    # a val painting that is also a training painting is left out of its own hand, never found as itself
    twin = train.take(slice(0, 1))
    att = F.fit_attribution(train, val, calib, 0)
    known = A.KnownHands.from_gallery(att, train.emb, train.artists, train.ids)
    s_itself = A.scores(att, known, twin.emb, twin.ids)
    s_other = A.scores(att, known, twin.emb, ["another id"])
    assert s_itself[0, 0] < s_other[0, 0]


def test_both_kinds_at_once_asks_trained_and_new_hands_in_one_gallery_and_gives_each_kinds_top1():
    rng = np.random.default_rng(7)
    dim = 16
    centres = rng.normal(size=(10, dim)) * 1.5
    train, val = _gaussian(rng, centres, 6, "t", 0.6), _gaussian(rng, centres, 2, "t", 0.6)
    calib = _gaussian(rng, rng.normal(size=(4, dim)) * 1.5, 4, "c", 0.6)
    test = _gaussian(rng, rng.normal(size=(5, dim)) * 1.5, 4, "x", 0.6)
    cuts = 2  # eval makes E.FOLD_DIVISIONS; two show that each cut divides the artists anew
    folds = E.cross_fitted(train, val, calib, test, 0, cuts=cuts)
    figures, pictures = E.mixed_figures(train, val, calib, test, seed=0, replicates=20, folds=folds)
    new = list(E._new_hands(test, 0, E.MIXED_DIVISIONS))
    assert figures["mixed_trained_hands"] == 10 and figures["mixed_new_hands"] == 3 == len(new[0][0])
    # in each of the cross-fitting's cuts, each val and calib painting asked in its fold's every division; each test
    # painting in every fold's, known when its artist is
    n = E.MIXED_DIVISIONS
    assert len(folds) == E.FOLDS * cuts and figures["mixed_fold_divisions"] == cuts
    held_out = [[frozenset(val_f.ids) for _, val_f, _ in folds[c * E.FOLDS:(c + 1) * E.FOLDS]] for c in range(cuts)]
    assert all(frozenset().union(*cut) == frozenset(val.ids) and sum(map(len, cut)) == len(val.ids) for cut in held_out)
    assert set(held_out[0]) != set(held_out[1])
    # the 4 calib artists dealt one to a fold: every model is fitted on 3 or 4 of them, none on fewer
    assert all(len(set(calib_f.artists)) <= 1 for _, _, calib_f in folds)
    assert sum(len(set(calib_f.artists)) for _, _, calib_f in folds) == cuts * 4
    assert figures["mixed_known_queries"] == cuts * (20 * n + E.FOLDS * sum(len(q) for _, _, q, _ in new))
    assert figures["mixed_unknown_queries"] == cuts * (16 * n + E.FOLDS * sum(len(u) for _, _, _, u in new))
    for _, g, q, _ in new:  # a new hand's query is never one of its gallery paintings
        assert not set(test.ids[g]) & set(test.ids[q])
    assert figures["mixed_top1_trained"] > 0.6 and figures["mixed_top1_new"] > 0.6
    assert 0.5 < figures["mixed_auroc"] <= 1 and pictures["curve"]
    # each kind's top-1 is the share of that kind's known queries whose hand comes first, over every division
    ans = E.mixed_answers(train, val, calib, test, 0, folds)
    for key, kind in (("mixed_top1_trained", ans.trained), ("mixed_top1_new", ans.known & ~ans.trained)):
        w = ans.weight * kind
        assert figures[key] == pytest.approx((w * (ans.rank == 0)).sum() / w.sum())
    ws, _ = E.workspace_figures(train, val, calib, test, seed=0, replicates=20, folds=folds)
    assert "workspace_top1_new" not in ws  # one kind asked about: no split by kind


def test_unseen_protocol_figures_equal_a_naive_count():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(8, 6)) * 1.5
    split = _gaussian(rng, centres, 6, "h", 0.5)
    att = F.fit_attribution(_gaussian(rng, rng.normal(size=(6, 6)), 8, "t", 0.5), split.take(np.zeros(48, bool)),
                            _gaussian(rng, rng.normal(size=(6, 6)) * 1.5, 6, "c", 0.5), 0)
    figures, _ = E.unseen_figures(split, att, seed=0, n=4, replicates=20)
    right = raw_right = weight = 0.0
    for names, g, q, u in F.divisions(split.artists, 0, 4):
        known = A.KnownHands.from_gallery(att, split.emb[g], split.artists[g], split.ids[g])
        for qi in q:
            row, _ = A.probabilities(att, known, A.scores(att, known, split.emb[[qi]], [split.ids[qi]]))
            right += (known.names[int(np.argmax(row[0]))] == split.artists[qi]) / len(q)
            raw = {a: np.mean(sorted((A.normalise(split.emb[g][split.artists[g] == a]) @ A.normalise(split.emb[qi])),
                                     reverse=True)[:3]) for a in names}  # the mean cosine to a hand's 3 closest
            raw_right += (max(raw, key=raw.get) == split.artists[qi]) / len(q)
            weight += 1 / len(q)
    assert figures["attribution_top1"] == pytest.approx(right / weight)
    assert figures["attribution_top1_raw"] == pytest.approx(raw_right / weight)
    assert figures["attribution_known_queries"] == sum(len(q) for _, _, q, _ in F.divisions(split.artists, 0, 4))
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
        top = p["hands"][0]["artist"]
        hedge = "probably" if p["hands"][0]["probability"] >= 0.5 else "perhaps"
        assert p["answer"] == {"named": top, "probably": f"{hedge} {top}, uncertain", "unknown hand": "unknown hand"}[
            p["verdict"]]
        assert p["unknown_hand"] == (p["unknown_hand_probability"] >= A.UNKNOWN_AT)
    assert (tmp_path / "s.png").exists() and (tmp_path / "e.png").exists()
    assert runner.invoke(app, ["attribute", str(query), "-w", str(ws)]).stdout.count("hand 1") == 1


def test_a_painting_of_the_workspace_in_another_file_is_set_aside_and_named(tmp_path, evaluated_run):
    """A workspace painting saved again as a smaller JPEG is the same painting: left out of its hand as its own file
    is, and the answer says which painting of the workspace it is; search shows it, marked, outside the vote."""
    from serving import outside_painting, painting_files

    ws = tmp_path / "ws"
    shutil.copytree(evaluated_run, ws)
    table = pd.read_parquet(ws / "manifests/split.parquet")
    original = painting_files(ws)[2]
    copy = tmp_path / "copy.jpg"
    with Image.open(original) as im:
        im.convert("RGB").resize((im.width * 3 // 4, im.height * 3 // 4)).save(copy, quality=80)
    out = json.loads(runner.invoke(app, ["attribute", str(copy), str(original), str(outside_painting(ws, tmp_path)),
                                         "-k", "8", "--json", "-w", str(ws)]).stdout)["paintings"]
    mine = table.iloc[2]
    for p in out[:2]:  # the re-encoded copy, and the workspace's own file
        assert [c["image_id"] for c in p["in_workspace"]] == [mine["image_id"]]
        assert p["in_workspace"][0]["artist"] == mine["artist"] and f"{mine['image_id']}, {mine['artist']}" in p["reason"]
        assert mine["image_id"] not in {c["image_id"] for h in p["hands"] for c in h["closest"]}
    assert out[2]["in_workspace"] == [] and "holds this painting" not in out[2]["reason"]  # rotated: another picture
    near = json.loads(runner.invoke(app, ["search", str(copy), "-k", "5", "--json", "-w", str(ws)]).stdout)
    marked = [n["image_id"] for n in near["neighbours"] if n["same_painting"]]
    assert marked == [mine["image_id"]] and near["neighbours"][0]["image_id"] == mine["image_id"]  # shown, first
    votes = [n["artist"] for n in near["neighbours"] if not n["same_painting"]]
    assert sorted(near["vote"]) == sorted([a, votes.count(a)] for a in set(votes))  # ... and not voting
    text = runner.invoke(app, ["search", str(copy), "-k", "5", "-w", str(ws)]).stdout
    assert "(the same painting)" in text and "in another file left out" in text
    own = json.loads(runner.invoke(app, ["search", str(original), "-k", "5", "--json", "-w", str(ws)]).stdout)
    assert mine["image_id"] not in {n["image_id"] for n in own["neighbours"]}
    assert not any(n["same_painting"] for n in own["neighbours"]) and sum(n for _, n in own["vote"]) == 5


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


def test_a_passage_pasted_into_a_wider_painting_is_found_at_its_place_in_the_file(tmp_path, evaluated_run):
    """Boxes are in the file's own pixels: a passage of one painting pasted into a wider one (its square is a centre
    crop) is matched where it was pasted, and its details are cut there, at the file's resolution."""
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.model import trained

    model = trained.from_run(Workspace(evaluated_run), "r")
    rng = np.random.default_rng(0)
    other = (rng.uniform(size=(320, 320, 3)) * 255).astype(np.uint8)
    first = np.clip(np.kron(rng.uniform(size=(40, 60, 3)), np.ones((8, 8, 1))) * 255, 0, 255).astype(np.uint8)
    first[200:320, 80:200] = other[200:320, 200:320]  # 480 x 320: the square is x 80..400; pasted at its bottom left
    paths = [tmp_path / "first.png", tmp_path / "other.png"]
    for path, pixels in zip(paths, (first, other)):
        Image.fromarray(pixels).save(path)
    cpu = torch.device("cpu")
    e = ev.evidence(*(ev.tiles(model, p, cpu) for p in paths), model)
    data = e.to_dict(2)
    assert (data["a"]["width"], data["a"]["height"]) == (480, 320)
    best = data["pairs"][0]
    for box, (x0, y0, x1, y1) in ((best["a"], (80, 200, 200, 320)), (best["b"], (200, 200, 320, 320))):
        inside = max(0, min(box[2], x1) - max(box[0], x0)) * max(0, min(box[3], y1) - max(box[1], y0))
        assert inside >= 0.8 * (box[2] - box[0]) * (box[3] - box[1]), (box, (x0, y0, x1, y1))
    i, j, _ = e.strongest(2)[0]
    x0, y0, x1, y1 = best["a"]
    assert np.array_equal(e.a.detail(i), first[y0:y1, x0:x1])  # from the file, at its own pixels
    assert 0 <= best["alone_same_artist_probability"] <= 1 and best["similarity"] == pytest.approx(e.similarity[i, j])


@pytest.mark.parametrize("size", [(30, 40), (2400, 1500)])
def test_small_and_large_paintings_have_heat_everywhere_and_details_inside(tmp_path, evaluated_run, size):
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.model import trained

    model = trained.from_run(Workspace(evaluated_run), "r")
    w, h = size
    path = tmp_path / "p.jpg"
    Image.fromarray((np.random.default_rng(1).uniform(size=(h, w, 3)) * 255).astype(np.uint8)).save(path)
    t = ev.tiles(model, path, torch.device("cpu"))
    heat = t.smooth(np.arange(len(t.boxes), dtype=float))
    assert heat.shape == (96, 96) and np.isfinite(heat).all()
    assert heat.min() >= 0 and heat.max() <= len(t.boxes) - 1  # a blend of the tiles' values, no hole left at 0
    for k in range(len(t.boxes)):
        x0, y0, x1, y1 = t.file_box(k)
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert t.detail(k).shape == (y1 - y0, x1 - x0, 3)


def test_the_evidence_json_is_what_the_picture_is_drawn_from(tmp_path, evaluated_run):
    from serving import painting_files

    a, b = map(str, painting_files(evaluated_run, "test")[:2])
    result = CliRunner().invoke(app, ["compare", a, b, "--evidence", str(tmp_path / "e.png"), "--details", "3",
                                      "--json", "--device", "cpu", "-w", str(evaluated_run)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)["evidence"]
    assert set(data) == {"heat", "boxes", "a", "b", "pairs"} and 1 <= len(data["pairs"]) <= 3
    assert [p["number"] for p in data["pairs"]] == list(range(1, len(data["pairs"]) + 1))
    for key in "ab":
        regions = data[key]["regions"]
        assert sorted(r["rank"] for r in regions)[-1] <= 1 and all(len(r["box"]) == 4 for r in regions)
    from pbn_cli.core.workspace import Workspace
    from pbn_cli.model import trained

    model = trained.from_run(Workspace(evaluated_run), "r")
    cpu = torch.device("cpu")
    again = ev.evidence_sheet(ev.evidence(ev.tiles(model, a, cpu), ev.tiles(model, b, cpu), model),
                              tmp_path / "again.png", "t", 3)
    assert json.loads(json.dumps(again)) == data  # the picture drew exactly what --json says
    assert Image.open(tmp_path / "again.png").size[0] > 600


def test_the_hand_softmax_fit_climbs_to_its_maximum_where_plain_newton_overshoots():
    """Episodes of trained hands only (their slope and count weight informed, the new hands' not): full Newton
    steps ran away to slopes of ~6e4 on every seed tried (the demo shipped 1.5e5); the halved steps stop at the
    penalised likelihood's maximum, which no nearby point beats."""
    from pbn_cli.answers import attribution_fitting as F

    rng = np.random.default_rng(0)
    rows, hands = 49, 14
    cols = rng.integers(hands, size=rows)
    s = rng.normal(-0.7, 0.4, size=(rows, hands))
    s[np.arange(rows), cols] += rng.normal(0.6, 0.3, size=rows)
    f = np.zeros((rows, hands, 4))
    f[..., 1], f[..., 2], f[..., 3] = s, 1.0, np.log(rng.integers(8, 12, size=hands))[None, :]
    w = rng.choice([0.0015, 0.0046, 0.0104], size=rows)
    theta = F._newton(f, np.ones((rows, hands), bool), cols, w, np.array([10.0, 10.0, 0.0, 0.0]))
    assert np.all(np.abs(theta) < 100) and theta[0] == 10.0  # the new hands' slope: nothing informs it

    def objective(t):
        logits = f @ t
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        ww = w * len(w) / w.sum()
        return ww @ np.log(p[np.arange(rows), cols]) - 1e-3 / 2 * t @ t

    best = objective(theta)
    for j in (1, 3):
        for delta in (-0.05, 0.05):
            assert objective(theta + delta * np.eye(4)[j]) < best
