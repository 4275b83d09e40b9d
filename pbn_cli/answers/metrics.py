"""The metrics, exactly as docs/metrics.md defines them (Euclidean distances).

Everything works in chunks, so the metrics of ~24k paintings with 2048-d
embeddings fit in a few hundred MB.
"""

from __future__ import annotations

import math

import numpy as np


def artist_codes(artists) -> tuple[np.ndarray, np.ndarray]:
    """Integer artist codes and the number of paintings of each code."""
    names, codes = np.unique(np.asarray(artists, dtype=object).astype(str), return_inverse=True)
    return codes, np.bincount(codes, minlength=len(names))


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between rows of ``a`` and rows of ``b`` (float64)."""
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(d2, 0.0))


def row_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance between ``a[i]`` and ``b[i]`` for each i."""
    diff = a.astype(np.float64) - b.astype(np.float64)
    return np.sqrt((diff * diff).sum(1))


def pair_distances(emb: np.ndarray, i: np.ndarray, j: np.ndarray, block: int = 1024) -> np.ndarray:
    """Distance between ``emb[i[k]]`` and ``emb[j[k]]`` for each k: ``row_distances`` a block of pairs at a time (the
    same numbers; the rows of 20,000 triplets at once in float64 were a gigabyte, most of eval's figure time)."""
    out = np.empty(len(i))
    for start in range(0, len(i), block):
        out[start:start + block] = row_distances(emb[i[start:start + block]], emb[j[start:start + block]])
    return out


def sample_triplets(artists, n: int, seed: int) -> np.ndarray:
    """(n, 3) indices (anchor, positive, negative) drawn like the reference, seeded.

    Anchor artist uniform among artists with at least two paintings; negative
    artist uniform among the other artists; anchor and positive two distinct
    paintings of the first, the negative one painting of the second.
    """
    codes, counts = artist_codes(artists)
    eligible = np.flatnonzero(counts >= 2)
    if len(eligible) == 0 or len(counts) < 2:
        return np.zeros((0, 3), dtype=np.int64)
    members = np.argsort(codes, kind="stable")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rng = np.random.default_rng(seed)
    art_a = eligible[rng.integers(len(eligible), size=n)]
    art_n = rng.integers(len(counts) - 1, size=n)
    art_n = art_n + (art_n >= art_a)
    i = rng.integers(counts[art_a])
    j = rng.integers(counts[art_a] - 1)
    j = j + (j >= i)
    k = rng.integers(counts[art_n])
    return np.stack([members[starts[art_a] + i], members[starts[art_a] + j], members[starts[art_n] + k]], 1)


def triplet_distances(emb: np.ndarray, triplets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d(anchor, positive) and d(anchor, negative) of each triplet."""
    return pair_distances(emb, triplets[:, 0], triplets[:, 1]), pair_distances(emb, triplets[:, 0], triplets[:, 2])


def triplet_correct(dp: np.ndarray, dn: np.ndarray) -> np.ndarray:
    """1 where d(a, p) < d(a, n), 0.5 on a tie, else 0."""
    return (dp < dn) + 0.5 * (dp == dn)


def batch4_correct(dp: np.ndarray, dn: np.ndarray) -> np.ndarray:
    """The reference's scoring: consecutive batches of 4 triplets, mean distances compared (a leftover is dropped)."""
    m = len(dp) // 4 * 4
    return triplet_correct(dp[:m].reshape(-1, 4).mean(1), dn[:m].reshape(-1, 4).mean(1))


def triplet_accuracy(emb: np.ndarray, triplets: np.ndarray) -> float:
    """Share of triplets with d(a, p) < d(a, n); ties count half."""
    if len(triplets) == 0:
        return float("nan")
    return float(np.mean(triplet_correct(*triplet_distances(emb, triplets))))


def reference_batch4_accuracy(emb: np.ndarray, triplets: np.ndarray) -> float:
    """The reference's inflated variant: consecutive batches of 4 triplets, mean distances compared."""
    if len(triplets) < 4:
        return float("nan")
    return float(np.mean(batch4_correct(*triplet_distances(emb, triplets))))


def pair_groups(n: int, seed: int, group_size: int = 1800) -> list[np.ndarray]:
    """Kaggle's protocol: paintings shuffled with the seed, cut into ceil(n / group_size) near-equal groups."""
    order = np.random.default_rng(seed).permutation(n)
    return np.array_split(order, max(1, math.ceil(n / group_size)))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for boolean ``labels`` (Mann-Whitney, ties averaged): ``weighted_auc`` with unit
    weights, kept apart because it serves the pair AUC over millions of pairs (22M: 9 s and 1.0 GiB at peak here,
    12 s and 1.6 GiB through ``weighted_auc``)."""
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    boundaries = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1], True])
    ranks = np.empty(len(scores), dtype=np.float64)
    mean_rank = (boundaries[:-1] + boundaries[1:] + 1) / 2.0  # 1-based average rank of each tie run
    ranks[order] = np.repeat(mean_rank, np.diff(boundaries))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def weighted_auc(scores: np.ndarray, labels: np.ndarray, w: np.ndarray) -> float:
    """ROC AUC with a weight per pair (ties count half)."""
    order = np.argsort(scores, kind="stable")
    s, y, w = scores[order], labels[order], w[order]
    wp, wn = np.where(y, w, 0.0), np.where(~y, w, 0.0)
    if wp.sum() <= 0 or wn.sum() <= 0:
        return float("nan")
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    neg_in_run = np.add.reduceat(wn, starts)
    pos_in_run = np.add.reduceat(wp, starts)
    neg_below = np.cumsum(neg_in_run) - neg_in_run
    return float((pos_in_run * (neg_below + 0.5 * neg_in_run)).sum() / (wp.sum() * wn.sum()))


def pair_scores(emb: np.ndarray, artists, seed: int, group_size: int = 1800):
    """Every within-group pair: (-distance, same-artist label, i, j), and the number of groups."""
    codes, _ = artist_codes(artists)
    groups = pair_groups(len(codes), seed, group_size)
    scores, labels, first, second = [], [], [], []
    for g in groups:
        d = distances(emb[g], emb[g])
        iu = np.triu_indices(len(g), 1)
        scores.append((-d[iu]).astype(np.float32))  # float32 and int32: 22M pairs fit in little memory
        labels.append(codes[g][iu[0]] == codes[g][iu[1]])
        first.append(g[iu[0]].astype(np.int32))
        second.append(g[iu[1]].astype(np.int32))
    if not scores:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0), np.zeros(0, dtype=bool), empty, empty, 0
    cat = np.concatenate
    return cat(scores), cat(labels), cat(first), cat(second), len(groups)


def pair_auc(emb: np.ndarray, artists, seed: int, group_size: int = 1800) -> tuple[float, int, int]:
    """ROC AUC of -distance for "same artist" over all within-group pairs; (auc, n_pairs, n_groups)."""
    s, y, _, _, n_groups = pair_scores(emb, artists, seed, group_size)
    return auc(s, y), len(s), n_groups


def retrieval(emb: np.ndarray, artists, chunk: int = 512) -> tuple[float, float, int]:
    """Leave-one-out precision@1 and MAP@R (Musgrave et al. 2020); (p@1, map@r, n_queries)."""
    queries, p1, ap = retrieval_per_query(emb, artists, chunk)
    if len(queries) == 0:
        return float("nan"), float("nan"), 0
    return float(p1.mean()), float(ap.mean()), len(queries)


def retrieval_per_query(emb: np.ndarray, artists, chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(queries, precision@1 of each, average precision at R of each).

    Queries whose artist has one painting are skipped. R is the number of
    other paintings by the query's artist.
    """
    codes, counts = artist_codes(artists)
    r_all = counts[codes] - 1
    queries = np.flatnonzero(r_all >= 1)
    if len(queries) == 0:
        return queries, np.zeros(0), np.zeros(0)
    max_r = int(r_all.max())
    p1, ap = [], []
    e = emb.astype(np.float64)  # once, not per chunk
    sq = (e * e).sum(1)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        d = e[q] @ e.T
        d *= -2.0
        d += sq[q][:, None]
        d += sq[None, :]
        np.maximum(d, 0.0, out=d)
        np.sqrt(d, out=d)
        d[np.arange(len(q)), q] = np.inf
        k = min(max_r, d.shape[1] - 1)
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.argsort(d, 1)[:, :k]
        part_d = np.take_along_axis(d, part, 1)
        # ties broken by index, so results do not depend on the partition's order
        order = np.lexsort((part, part_d), axis=1)
        ranked = np.take_along_axis(part, order, 1)
        rel = codes[ranked] == codes[q][:, None]
        p1.append(rel[:, 0])
        r = r_all[q]
        within = np.arange(k)[None, :] < r[:, None]
        hits = np.cumsum(rel & within, 1)
        prec = hits / np.arange(1, k + 1)[None, :]
        ap.append((prec * (rel & within)).sum(1) / r)
    return queries, np.concatenate(p1).astype(np.float64), np.concatenate(ap)
