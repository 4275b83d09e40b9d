"""95% intervals from a bootstrap over artists.

Each replicate draws the split's artists with replacement; an artist drawn
k times weighs k in every per-item statistic: triplets by their anchor's
artist, pairs by the product of their two artists' weights, retrieval
queries by their artist. Embeddings and neighbours are not recomputed, so
this is a cluster bootstrap of the per-item outcomes: it shows how much a
figure rests on which artists happened to be in the split. A figure from 8
artists gets a wide interval, as it should.
"""

from __future__ import annotations

import numpy as np


def artist_weights(n_artists: int, replicates: int, seed: int) -> np.ndarray:
    """(replicates, n_artists) multiplicities of each artist in each resample."""
    rng = np.random.default_rng([seed, 99])
    draws = rng.integers(n_artists, size=(replicates, n_artists))
    return np.stack([np.bincount(d, minlength=n_artists) for d in draws]).astype(np.float64)


def weighted_mean(values: np.ndarray, groups: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """For each replicate: sum of weights[group] * value / sum of weights[group]."""
    w = weights[:, groups]
    total = w.sum(1)
    return np.where(total > 0, (w * values[None, :]).sum(1) / np.maximum(total, 1e-12), np.nan)


def interval(samples: np.ndarray) -> list[float]:
    samples = samples[np.isfinite(samples)]
    if len(samples) == 0:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(samples, [2.5, 97.5])
    return [float(lo), float(hi)]
