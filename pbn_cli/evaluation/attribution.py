"""Attribution on artists never trained on: seeded known/unknown divisions of the evaluated split (docs/metrics.md).

For each division the split's artists (sorted by name) are shuffled with the
seed; the first half (rounded up) are *known*, the rest *unknown*. Each known
artist's paintings are shuffled too: the first half (rounded up) form the
gallery, the rest are queries; every painting of an unknown artist is a
query. Known-hand queries give top-1 and top-5 attribution accuracy;
known-hand against unknown-hand queries, ranked by their best artist score,
give the open-set AUROC; the rule "unknown hand when no hand reaches
p = 0.5" (the open-set probabilities of model/attribution.py) gives the share
of unknown-hand queries it rejects and of known-hand queries it wrongly
rejects. Beside them, what ``search`` gave
before: the k-nearest-neighbour vote (top-1), and the raw best score (the
mean cosine similarity to an artist's 3 closest gallery paintings; AUROC).
Figures are means over the divisions; intervals come from the bootstrap over
artists (a query weighs its artist's multiplicity in each replicate).
"""

from __future__ import annotations

import math

import numpy as np

from pbn_cli.evaluation import bootstrap
from pbn_cli.model import attribution as scoring
from pbn_cli.model.metrics import artist_codes

DIVISIONS = 20
KNN = 10  # neighbours of the vote `pbn search` shows
RAW_TOP = 3  # gallery paintings whose mean similarity is the raw artist score


def divisions(artists, seed: int, n: int = DIVISIONS):
    """(known artists' names, gallery, its codes into the names, known queries, their codes, unknown queries) per
    division; indices into ``artists``."""
    artists = np.asarray(artists, object).astype(str)
    names = np.unique(artists)
    for d in range(n):
        rng = np.random.default_rng([seed, d])
        shuffled = names[rng.permutation(len(names))]
        known = shuffled[: math.ceil(len(names) / 2)]
        g, gl, q, ql = [], [], [], []
        for code, name in enumerate(known):
            rows = np.flatnonzero(artists == name)[rng.permutation((artists == name).sum())]
            half = math.ceil(len(rows) / 2)
            g += list(rows[:half])
            gl += [code] * half
            q += list(rows[half:])
            ql += [code] * (len(rows) - half)
        yield known, np.array(g, int), np.array(gl, int), np.array(q, int), np.array(ql, int), \
            np.flatnonzero(~np.isin(artists, known))


def _raw_scores(e: np.ndarray, gallery_labels: np.ndarray, n_known: int) -> np.ndarray:
    """(Q, A): mean cosine similarity to each artist's RAW_TOP closest gallery paintings (``e``: query x gallery)."""
    out = np.full((len(e), n_known), -np.inf)
    for a in range(n_known):
        sims = -np.sort(-e[:, gallery_labels == a], axis=1)[:, :RAW_TOP]
        out[:, a] = sims.mean(1)
    return out


def _vote(e: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """The k-NN vote's artist per query: most votes among the KNN nearest, ties to the nearest painting's."""
    near = np.argsort(-e, axis=1, kind="stable")[:, :KNN]
    out = np.empty(len(e), int)
    for i, row in enumerate(gallery_labels[near]):
        counts = np.bincount(row)
        best = np.flatnonzero(counts == counts.max())
        out[i] = next(a for a in row if a in best)
    return out


def attribution_figures(emb: np.ndarray, artists, ids, att: scoring.Attributor, seed: int, n: int = DIVISIONS,
                        replicates: int = 200) -> dict:
    """The attribution figures of the split (keys ``attribution_*``, ``open_set_*``), each with its interval."""
    artists, ids = np.asarray(artists).astype(str), np.asarray(ids).astype(str)
    codes, _ = artist_codes(artists)
    if len(np.unique(codes)) < 4:
        return {"attribution_divisions": 0}
    raw, z = scoring.normalise(np.asarray(emb, np.float32)), att.whiten(emb)
    w = bootstrap.artist_weights(int(codes.max()) + 1, replicates, seed)
    per = {k: [] for k in ("top1", "top5", "knn", "auc", "raw_auc", "rejected", "wrongly")}
    boot = {k: [] for k in per}
    for known_names, g, gl, q, ql, u in divisions(artists, seed, n):
        asked = np.r_[q, u]
        hands = scoring.known(att, z[g], artists[g], ids[g])
        s = scoring.scores(hands, z[asked], ids[asked])  # columns: hands.names, sorted
        own = np.searchsorted(hands.names, artists[q])
        known = np.r_[np.ones(len(q), bool), np.zeros(len(u), bool)]
        rank = (s[: len(q)] > s[np.arange(len(q)), own][:, None]).sum(1)
        e = raw[asked] @ raw[g].T
        best, raw_best = s.max(1), _raw_scores(e, gl, len(known_names)).max(1)
        p, _ = scoring.probabilities(att, s)
        rejected = p.max(1) < scoring.UNKNOWN_BELOW if att.open_set else np.full(len(best), np.nan)
        outcomes = {"top1": rank == 0, "top5": rank < 5, "knn": _vote(e[: len(q)], gl) == ql,
                    "rejected": rejected[~known], "wrongly": rejected[known]}
        who = {"top1": codes[q], "top5": codes[q], "knn": codes[q], "rejected": codes[u], "wrongly": codes[q]}
        for key, values in outcomes.items():
            per[key].append(np.mean(values))
            boot[key].append(bootstrap.weighted_mean(np.asarray(values, float), who[key], w))
        qw = w[:, codes[asked]]
        for key, score in (("auc", best), ("raw_auc", raw_best)):
            per[key].append(bootstrap.weighted_auc(score, known, np.ones(len(score))))
            boot[key].append(np.array([bootstrap.weighted_auc(score, known, qw[r]) for r in range(replicates)]))
    return _summary(per, boot, n, len(np.unique(artists)), att)


def _mean(rows: list) -> np.ndarray:
    """The mean over divisions of each replicate (a division without such queries adds nothing)."""
    stacked = np.stack(rows)
    counted = np.isfinite(stacked).sum(0)
    return np.where(counted > 0, np.nansum(stacked, 0) / np.maximum(counted, 1), np.nan)


def _summary(per: dict, boot: dict, n: int, n_artists: int, att: scoring.Attributor) -> dict:
    names = {"top1": "attribution_top1", "top5": "attribution_top5", "knn": "attribution_knn_vote_top1",
             "auc": "open_set_auroc", "raw_auc": "open_set_auroc_raw", "rejected": "unknown_rejected",
             "wrongly": "known_rejected"}
    out: dict = {}
    for key, name in names.items():
        out[name] = float(np.mean(per[key]))
        out[f"{name}_ci"] = bootstrap.interval(_mean(boot[key]))
    gain = np.array(per["auc"]) - np.array(per["raw_auc"])
    out["open_set_auroc_gain"] = float(gain.mean())
    out["open_set_auroc_gain_ci"] = bootstrap.interval(_mean([a - b for a, b in zip(boot["auc"], boot["raw_auc"])]))
    out["open_set_auroc_gain_positive"] = int((gain > 0).sum())
    out.update(attribution_divisions=n, attribution_artists=n_artists,
               attribution_probability_fitted_on=att.fitted_on.get("probability", "none"))
    return out
