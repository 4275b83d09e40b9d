"""Metrics against independent implementations on random and hand-made embeddings."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pbn_cli.answers import metrics


def _random(n=120, artists=12, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, artists, n)
    centres = rng.normal(0, 1, (artists, dim))
    emb = centres[labels] + rng.normal(0, 1.2, (n, dim))
    return emb.astype(np.float32), np.array([f"artist {i}" for i in labels], dtype=object)


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 20, 500).astype(float)  # many ties
    labels = rng.uniform(size=500) < 0.3
    assert metrics.auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_pair_auc_is_every_pair_within_groups():
    emb, artists = _random(300)
    auc, n_pairs, n_groups = metrics.pair_auc(emb, artists, seed=3, group_size=100)
    groups = metrics.pair_groups(len(emb), 3, 100)
    assert n_groups == 3 and sorted(np.concatenate(groups)) == list(range(300))
    assert max(map(len, groups)) - min(map(len, groups)) <= 1
    scores, labels = [], []
    for g in groups:
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                a, b = g[i], g[j]
                scores.append(-np.linalg.norm(emb[a].astype(np.float64) - emb[b]))
                labels.append(artists[a] == artists[b])
    assert n_pairs == len(scores)
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    one_group = metrics.pair_auc(emb, artists, seed=3)
    assert one_group[2] == 1 and one_group[1] == 300 * 299 // 2


def test_triplet_accuracy_against_a_naive_loop():
    emb, artists = _random()
    triplets = metrics.sample_triplets(artists, 2000, seed=5)
    correct = 0.0
    for a, p, n in triplets:
        assert artists[a] == artists[p] and a != p and artists[n] != artists[a]
        dp, dn = np.linalg.norm(emb[a] - emb[p]), np.linalg.norm(emb[a] - emb[n])
        correct += 1.0 if dp < dn else 0.5 if dp == dn else 0.0
    assert metrics.triplet_accuracy(emb, triplets) == pytest.approx(correct / len(triplets), abs=1e-9)
    assert np.array_equal(triplets, metrics.sample_triplets(artists, 2000, seed=5))  # seeded


def test_pair_distances_are_the_gathered_rows_distances_block_by_block():
    emb, _ = _random(50)
    rng = np.random.default_rng(2)
    i, j = rng.integers(0, 50, 103), rng.integers(0, 50, 103)
    got = metrics.pair_distances(emb, i, j, block=7)  # 15 blocks, the last one short
    assert np.array_equal(got, metrics.row_distances(emb[i], emb[j]))
    assert got == pytest.approx([np.linalg.norm(emb[a].astype(np.float64) - emb[b]) for a, b in zip(i, j)], abs=1e-12)
    assert metrics.pair_distances(emb, i[:0], j[:0]).shape == (0,)


def test_triplet_sampling_is_uniform_over_anchor_artists():
    artists = np.array(["a"] * 50 + ["b"] * 2 + ["c"] * 2 + ["d"], dtype=object)
    t = metrics.sample_triplets(artists, 30000, seed=0)
    share = np.mean(artists[t[:, 0]] == "a")
    assert abs(share - 1 / 3) < 0.02  # artists, not paintings, are drawn uniformly
    assert not (artists[t[:, 0]] == "d").any()  # one painting: never an anchor


def test_reference_batch4_is_the_batch_mean_comparison():
    emb = np.array([[0.0], [1.0], [3.0], [10.0]])
    t = np.array([[0, 1, 2], [0, 2, 1], [0, 1, 2], [0, 1, 3]])  # d(a,p): 1, 3, 1, 1; d(a,n): 3, 1, 3, 10
    assert metrics.triplet_accuracy(emb, t) == 0.75
    assert metrics.reference_batch4_accuracy(emb, t) == 1.0  # mean 1.5 < mean 4.25


def _brute_retrieval(emb, artists):
    p1, ap = [], []
    for q in range(len(emb)):
        others = [i for i in range(len(emb)) if i != q]
        r = sum(artists[i] == artists[q] for i in others)
        if r == 0:
            continue
        d = [(float(np.linalg.norm(emb[q].astype(np.float64) - emb[i])), i) for i in others]
        ranked = [i for _, i in sorted(d)]
        rel = [artists[i] == artists[q] for i in ranked[:r]]
        p1.append(rel[0])
        hits, s = 0, 0.0
        for k, ok in enumerate(rel, start=1):
            if ok:
                hits += 1
                s += hits / k
        ap.append(s / r)
    return np.mean(p1), np.mean(ap), len(p1)


def test_retrieval_against_brute_force():
    emb, artists = _random(90, 9)
    artists[0] = "lonely"  # a query that must be skipped
    p1, map_r, n = metrics.retrieval(emb, artists, chunk=16)
    bp1, bmap, bn = _brute_retrieval(emb, artists)
    assert n == bn == 89 and p1 == bp1
    assert map_r == pytest.approx(bmap, abs=1e-12)


def test_perfect_embeddings_score_one():
    artists = np.repeat(np.array(["x", "y", "z"], dtype=object), 5)
    emb = np.repeat(np.eye(3), 5, axis=0) * 10 + np.random.default_rng(0).normal(0, 0.01, (15, 3))
    t = metrics.sample_triplets(artists, 500, 0)
    assert metrics.triplet_accuracy(emb, t) == 1.0
    assert metrics.pair_auc(emb, artists, 0)[0] == 1.0
    assert metrics.retrieval(emb, artists)[:2] == (1.0, 1.0)
    assert math.isnan(metrics.triplet_accuracy(emb, t[:0]))


def test_eval_figures_are_the_tested_metric_functions():
    """compute_metrics (what eval ships) gives what the functions tested above give on the same triplets."""
    from pbn_cli.evaluation.scores import compute_metrics

    emb, artists = _random(150, 10)
    out = compute_metrics(emb, artists, seed=3, n_triplets=1001, group_size=1800, replicates=20)
    triplets = metrics.sample_triplets(artists, 1001, 3)
    assert out["triplet_accuracy"] == metrics.triplet_accuracy(emb, triplets)
    assert out["reference_batch4_accuracy"] == metrics.reference_batch4_accuracy(emb, triplets)
    assert out["pair_auc"] == pytest.approx(metrics.pair_auc(emb, artists, 3)[0], abs=1e-6)
    p1, map_r, _ = metrics.retrieval(emb, artists)
    assert (out["precision_at_1"], out["map_at_r"]) == (p1, map_r)
