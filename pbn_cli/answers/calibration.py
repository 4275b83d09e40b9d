"""Verdicts: a distance threshold and a calibrated same-artist probability, and how well calibrated it is.

Fitted on balanced pairs (as many same-artist as different-artist pairs) of
the ``calib`` split's artists, never trained on (``val`` in workspaces
without one): the threshold of best accuracy, and a logistic (Platt) map
p(same | d) = 1 / (1 + exp(a·d + b)), which at even odds is the probability
a person reads. Reported on the evaluated split as balanced accuracy at that
threshold, the equal error rate, and the expected calibration error of the
probability over balanced pairs (``expected_calibration_error``).
"""

from __future__ import annotations

import numpy as np

from pbn_cli.answers.metrics import artist_codes, pair_distances


def balanced_pairs(artists, seed: int, max_pairs: int = 50_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, same): up to ``max_pairs`` same-artist pairs and as many different-artist ones."""
    codes, counts = artist_codes(artists)
    rng = np.random.default_rng(seed)
    same_i, same_j = [], []
    for c in np.flatnonzero(counts >= 2):
        members = np.flatnonzero(codes == c)
        iu = np.triu_indices(len(members), 1)
        same_i.append(members[iu[0]])
        same_j.append(members[iu[1]])
    if not same_i or len(counts) < 2:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0, bool)
    si, sj = np.concatenate(same_i), np.concatenate(same_j)
    if len(si) > max_pairs:
        keep = rng.choice(len(si), max_pairs, replace=False)
        si, sj = si[keep], sj[keep]
    n = len(si)
    di = rng.integers(len(codes), size=4 * n)
    dj = rng.integers(len(codes), size=4 * n)
    ok = codes[di] != codes[dj]
    di, dj = di[ok][:n], dj[ok][:n]
    i = np.concatenate([si, di])
    j = np.concatenate([sj, dj])
    same = np.concatenate([np.ones(len(si), bool), np.zeros(len(di), bool)])
    return i, j, same


def best_threshold(d: np.ndarray, same: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """The threshold t (same artist when d <= t) of best balanced accuracy, and that accuracy (pairs weighted)."""
    order = np.argsort(d, kind="stable")
    ds, ys = d[order], same[order]
    w = np.ones(len(d)) if weights is None else np.asarray(weights, np.float64)[order]
    del order
    n_pos, n_neg = w[ys].sum(), w[~ys].sum()
    tp = np.cumsum(np.where(ys, w, 0.0))  # same-artist weight at or below each cut
    fp = np.cumsum(np.where(ys, 0.0, w))
    bal = (0.5 / n_pos) * tp + (0.5 / n_neg) * (n_neg - fp)
    del tp, fp
    bal[:-1][ds[1:] == ds[:-1]] = -1  # cut only between distinct distances
    k = int(np.argmax(bal))
    if bal[k] < 0.5:  # never better than calling everything "different"
        return float(ds[0]) - 1e-9, 0.5
    t = (ds[k] + ds[k + 1]) / 2 if k + 1 < len(ds) else ds[k]
    return float(t), float(bal[k])


def fit_platt(d: np.ndarray, same: np.ndarray, iterations: int = 100,
              weights: np.ndarray | None = None) -> tuple[float, float]:
    """(a, b) of p(same | d) = 1 / (1 + exp(a·d + b)) by Newton's method (with a tiny ridge; pairs weighted)."""
    x = np.stack([d, np.ones_like(d)], 1).astype(np.float64)
    y = same.astype(np.float64)
    v = np.ones(len(d)) if weights is None else np.asarray(weights, np.float64)
    w = np.zeros(2)
    for _ in range(iterations):
        z = np.clip(x @ w, -50, 50)
        p = 1 / (1 + np.exp(z))  # probability of "same"
        grad = x.T @ (v * (y - p))  # gradient of the negative log-likelihood (p falls as z rises)
        h = (x * (v * p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, grad)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


def probability(d, a: float, b: float) -> np.ndarray:
    return 1 / (1 + np.exp(np.clip(a * np.asarray(d, dtype=np.float64) + b, -50, 50)))


def fit(emb: np.ndarray, artists, seed: int) -> dict:
    """Threshold and Platt map fitted on balanced pairs of ``emb``; {} when there are no pairs."""
    return fit_parts([(emb, artists)], seed)


def fit_parts(parts: list[tuple[np.ndarray, object]], seed: int) -> dict:
    """Threshold and Platt map fitted on balanced pairs of each part (embeddings, artists), every part weighing the
    same however many pairs it has; {} when there are no pairs."""
    d, same, weight = [], [], []
    for emb, artists in parts:
        i, j, y = balanced_pairs(artists, seed)
        if len(i):
            d.append(pair_distances(emb, i, j))
            same.append(y)
            weight.append(np.full(len(i), 1.0 / len(i)))
    if not d:
        return {}
    d, same, weight = np.concatenate(d), np.concatenate(same), np.concatenate(weight)
    weight *= len(d)  # a mean weight of 1, as unweighted pairs have
    threshold, accuracy = best_threshold(d, same, weight)
    a, b = fit_platt(d, same, weights=weight)
    return {"threshold": threshold, "platt_a": a, "platt_b": b, "fit_accuracy": accuracy, "fit_pairs": int(len(d))}


def equal_error_rate(d: np.ndarray, same: np.ndarray, weights: np.ndarray | None = None) -> float:
    """EER of distances (small = same): where the false accept and false reject rates meet."""
    order = np.argsort(d, kind="stable")
    ys = same[order]
    if weights is None:
        pos_cum = np.cumsum(ys, dtype=np.int64)
        neg_cum = np.arange(1, len(ys) + 1) - pos_cum
    else:
        w = weights[order]
        pos_cum = np.cumsum(np.where(ys, w, 0.0))
        neg_cum = np.cumsum(np.where(ys, 0.0, w))
    del order
    n_pos, n_neg = (pos_cum[-1], neg_cum[-1]) if len(ys) else (0, 0)
    if n_pos <= 0 or n_neg <= 0:
        return float("nan")
    gap = np.abs((1 - pos_cum / n_pos) - neg_cum / n_neg)  # false rejects minus false accepts
    k = int(np.argmin(gap))
    return float(((1 - pos_cum[k] / n_pos) + neg_cum[k] / n_neg) / 2)


def balanced_accuracy(d: np.ndarray, same: np.ndarray, threshold: float, weights: np.ndarray | None = None) -> float:
    """Mean of the same-artist and different-artist accuracies at ``threshold`` (optionally weighted)."""
    pred = d <= threshold
    if weights is None:
        pos, neg = same.sum(), (~same).sum()
        if pos == 0 or neg == 0:
            return float("nan")
        return float(0.5 * ((same & pred).sum() / pos + (~same & ~pred).sum() / neg))
    pos, neg = weights[same].sum(), weights[~same].sum()
    if pos <= 0 or neg <= 0:
        return float("nan")
    return float(0.5 * (weights[same & pred].sum() / pos + weights[~same & ~pred].sum() / neg))


def reliability(p: np.ndarray, same: np.ndarray, weights: np.ndarray | None = None, bins: int = 10):
    """Per probability bin of equal width: (weight, mean probability, share of same-artist pairs); empty bins NaN."""
    w = np.ones(len(p)) if weights is None else weights
    b = np.minimum((np.asarray(p) * bins).astype(int), bins - 1)
    mass = np.bincount(b, w, bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return mass, np.bincount(b, w * p, bins) / mass, np.bincount(b, w * same, bins) / mass


def expected_calibration_error(p: np.ndarray, same: np.ndarray, weights: np.ndarray | None = None,
                               bins: int = 10) -> float:
    """ECE: over ``bins`` equal-width bins of the probability, the mean |share of same-artist pairs - mean
    probability|, each bin weighing its share of the pairs (optionally weighted)."""
    mass, conf, freq = reliability(p, same, weights, bins)
    total = mass.sum()
    if total <= 0:
        return float("nan")
    full = mass > 0
    return float((mass[full] * np.abs(freq[full] - conf[full])).sum() / total)
