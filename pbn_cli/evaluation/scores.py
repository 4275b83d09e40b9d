"""Every figure of docs/metrics.md for one set of embeddings, each with a bootstrap interval over artists."""

from __future__ import annotations

import numpy as np

from pbn_cli.evaluation import bootstrap
from pbn_cli.answers import calibration, metrics

#: the figures of docs/metrics.md: name in metrics.json, what a person calls it, what it means
FIGURES = (
    ("triplet_accuracy", "triplet accuracy", "share of seeded triplets with d(anchor, positive) < d(anchor, negative)"),
    ("pair_auc", "pair AUC", "ROC AUC of −distance over every pair within groups (Kaggle's protocol)"),
    ("precision_at_1", "precision@1", "share of paintings whose nearest other painting has the same artist"),
    ("map_at_r", "MAP@R", "mean average precision over each painting's R same-artist neighbours"),
    ("verification_accuracy", "verification accuracy", "balanced accuracy of the verdict 'same artist' at the calibrated threshold"),
    ("eer", "equal error rate", "where false accepts and false rejects are equally frequent (lower is better)"),
    ("calibration_ece", "calibration error of p(same)", "expected calibration error over balanced pairs: per probability bin, the gap between the share that are the same artist and the mean p(same), weighted by the bin's pairs (lower is better)"),
    ("reference_batch4_accuracy", "reference batch-of-4 accuracy", "inflated, for comparison only: mean distances of 4 triplets compared"),
)
#: the attribution figures (evaluation/attribution.py), after a protocol's prefix: name, what a person calls it,
#: the baselines beside it
ATTRIBUTION = (
    ("top1", "top-1 attribution (known hands)", ("knn_vote_top1", "top1_raw")),
    ("top1_trained", "top-1, paintings by trained hands", ()),
    ("top1_new", "top-1, paintings by new hands", ()),
    ("top5", "top-5 attribution (known hands)", ()),
    ("auroc", "open-set AUROC (known vs unknown hand, by p(unknown))", ("auroc_raw",)),
    ("ece", "calibration error of p(top hand)", ()),
    ("named_precision", "named answers that are right", ()),
    ("named_coverage", "queries given a name", ()),
    ("probably_share", "queries answered 'probably …' or 'perhaps …, uncertain'", ()),
    ("unknown_rejected", "unknown hands answered 'unknown hand'", ()),
    ("known_rejected", "known hands wrongly answered 'unknown hand'", ()),
)


def compute_metrics(
    emb: np.ndarray,
    artists,
    seed: int,
    n_triplets: int,
    group_size: int,
    threshold: float | None = None,
    replicates: int = 200,
    max_bootstrap_pairs: int = 500_000,
    pairs: tuple | None = None,
) -> dict:
    """Every figure of docs/metrics.md, each with a 95% bootstrap interval over artists (``<name>_ci``).

    ``pairs`` is ``metrics.pair_scores``'s result when the caller already has it.
    """
    codes, _ = metrics.artist_codes(artists)
    n_artists = int(codes.max()) + 1 if len(codes) else 0
    w = bootstrap.artist_weights(n_artists, replicates, seed)
    out: dict = {}

    triplets = metrics.sample_triplets(artists, n_triplets, seed)
    dp, dn = metrics.triplet_distances(emb, triplets)
    correct = metrics.triplet_correct(dp, dn)
    anchors = codes[triplets[:, 0]]
    out["triplet_accuracy"] = float(correct.mean()) if len(correct) else float("nan")
    out["triplet_accuracy_ci"] = bootstrap.interval(bootstrap.weighted_mean(correct, anchors, w))
    b4 = metrics.batch4_correct(dp, dn)
    out["reference_batch4_accuracy"] = float(b4.mean()) if len(b4) else float("nan")
    batch_w = w[:, anchors[: 4 * len(b4)]].reshape(replicates, -1, 4).mean(2)
    out["reference_batch4_accuracy_ci"] = bootstrap.interval((batch_w * b4).sum(1) / np.maximum(batch_w.sum(1), 1e-12))

    scores, same, pi, pj, n_groups = pairs if pairs is not None else metrics.pair_scores(emb, artists, seed, group_size)
    out["pair_auc"] = metrics.auc(scores, same)  # the figure uses every pair
    rng = np.random.default_rng([seed, 5])
    sub = np.unique(rng.integers(len(scores), size=max_bootstrap_pairs)) if len(scores) > max_bootstrap_pairs else slice(None)
    s_sub, y_sub, ci, cj = scores[sub], same[sub], codes[pi[sub]], codes[pj[sub]]
    order = np.argsort(-s_sub, kind="stable")  # ascending distance
    d_sorted, y_sorted, ci, cj = -s_sub[order], y_sub[order], ci[order], cj[order]
    aucs, accs, eers = [], [], []
    distance = -scores
    del scores
    if threshold is None:
        threshold, _ = calibration.best_threshold(distance, same)
    for r in range(replicates):
        pw = w[r, ci] * w[r, cj]
        aucs.append(metrics.weighted_auc(-d_sorted, y_sorted, pw))
        accs.append(calibration.balanced_accuracy(d_sorted, y_sorted, threshold, pw))
        eers.append(calibration.equal_error_rate(d_sorted, y_sorted, pw))
    out["pair_auc_ci"] = bootstrap.interval(np.array(aucs))
    out["verification_accuracy"] = calibration.balanced_accuracy(distance, same, threshold)
    out["verification_accuracy_ci"] = bootstrap.interval(np.array(accs))
    out["eer"] = calibration.equal_error_rate(distance, same)
    out["eer_ci"] = bootstrap.interval(np.array(eers))
    out["threshold"] = float(threshold)

    queries, p1, ap = metrics.retrieval_per_query(emb, artists)
    out["precision_at_1"] = float(p1.mean()) if len(queries) else float("nan")
    out["precision_at_1_ci"] = bootstrap.interval(bootstrap.weighted_mean(p1, codes[queries], w))
    out["map_at_r"] = float(ap.mean()) if len(queries) else float("nan")
    out["map_at_r_ci"] = bootstrap.interval(bootstrap.weighted_mean(ap, codes[queries], w))
    out.update(
        n_paintings=int(len(emb)), n_artists=n_artists, n_triplets=int(len(triplets)), n_pairs=int(len(distance)),
        n_groups=int(n_groups), n_queries=int(len(queries)), bootstrap_replicates=replicates, seed=seed,
    )
    return out


def calibration_figures(emb: np.ndarray, artists, calib: dict, seed: int, replicates: int = 200) -> tuple[dict, tuple]:
    """How well p(same) is calibrated on the evaluated split: its ECE over balanced pairs, with a bootstrap interval
    over artists; and (probabilities, labels) for the reliability diagram."""
    i, j, same = calibration.balanced_pairs(artists, seed)
    if not len(i) or "platt_a" not in calib:
        return {"calibration_ece": float("nan"), "calibration_ece_ci": [float("nan")] * 2, "calibration_pairs": 0}, None
    p = calibration.probability(metrics.pair_distances(emb, i, j), calib["platt_a"], calib["platt_b"])
    codes, _ = metrics.artist_codes(artists)
    w = bootstrap.artist_weights(int(codes.max()) + 1, replicates, seed)
    eces = np.array([calibration.expected_calibration_error(p, same, w[r, codes[i]] * w[r, codes[j]])
                     for r in range(replicates)])
    ece = calibration.expected_calibration_error(p, same)
    # ECE only grows under resampling (noise widens every bin's gap): the interval is the replicates' spread
    # around their own mean, placed on the estimate (never below 0)
    lo, hi = bootstrap.interval(eces - np.nanmean(eces))
    figures = {"calibration_ece": ece, "calibration_ece_ci": [max(0.0, ece + lo), ece + hi],
               "calibration_pairs": int(len(i))}
    return figures, (p, same)
