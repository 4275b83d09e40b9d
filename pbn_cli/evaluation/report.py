"""The pictures and report.md of one evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from pbn_cli.core.atomic import write_text
from pbn_cli.evaluation import plots
from pbn_cli.evaluation.scores import ATTRIBUTION, FIGURES
from pbn_cli.answers import metrics



def write_pictures(folder: Path, emb, artists, images, figures: dict, seed: int, pairs: tuple,
                   probabilities: tuple | None = None, attribution: dict | None = None) -> dict[str, str]:
    """Every picture of an evaluation (``pairs``: ``metrics.pair_scores``'s result; ``probabilities``: p(same) and
    labels of balanced pairs, for the reliability diagram); returns file name -> caption."""
    artists = np.asarray(artists, dtype=object)
    made: dict[str, str] = {}
    scores, same, pi, pj, _ = pairs
    plots.roc_curve(scores, same, figures["pair_auc"], folder / "roc.png")
    made["roc.png"] = "ROC curve of pairs within groups"
    plots.distance_histograms(-scores, same, figures["threshold"], folder / "distances.png")
    made["distances.png"] = "distances of same-artist and different-artist pairs, with the verdict threshold"
    t = metrics.sample_triplets(artists, 8, seed)
    if len(t):
        dp, dn = metrics.triplet_distances(emb, t)
        plots.triplet_sheet(images, artists, t, dp, dn, folder / "triplets.png", "seeded triplets (green: right)")
        made["triplets.png"] = "seeded test triplets: anchor, positive, negative (green frame: d(a,p) < d(a,n))"
    d = -scores
    diff = np.flatnonzero(~same)
    sames = np.flatnonzero(same)
    worst_diff = diff[np.argsort(d[diff], kind="stable")[:5]]
    worst_same = sames[np.argsort(-d[sames], kind="stable")[:5]]
    if len(worst_diff):
        plots.pair_sheet(images, artists, list(zip(pi[worst_diff], pj[worst_diff])), d[worst_diff], folder / "errors_different.png",
                         "closest pairs by different artists")
        made["errors_different.png"] = "worst errors: the closest pairs painted by different artists"
    if len(worst_same):
        plots.pair_sheet(images, artists, list(zip(pi[worst_same], pj[worst_same])), d[worst_same], folder / "errors_same.png",
                         "farthest pairs by the same artist")
        made["errors_same.png"] = "worst errors: the farthest pairs painted by the same artist"
    if probabilities is not None:
        plots.reliability_diagram(*probabilities, figures["calibration_ece"], folder / "reliability.png")
        made["reliability.png"] = ("reliability of p(same) on balanced pairs of this split: predicted probability "
                                   "against the share that are the same artist")
    for protocol, key, words in (("workspace", "workspace_ece", "among the workspace's trained hands"),
                                 ("mixed", "mixed_ece", "among trained and new hands at once"),
                                 ("unseen", "attribution_ece", "among unseen artists")):
        if (attribution or {}).get(protocol):
            name = f"attribution-{protocol}.png"
            plots.attribution_diagram(attribution[protocol], figures[key], folder / name, f"who painted it, {words}")
            made[name] = f"attribution {words}: reliability of p(top hand), and named answers' precision against coverage"
    method = plots.embedding_map(emb, artists, folder / "map.png", seed=seed)
    made["map.png"] = f"{method} map of the embeddings, coloured by artist (up to 30 artists)"
    return made


CALIBRATION_WORDS = {
    "val+calib": "the training artists' held-out paintings (val) and the calibration artists, never trained on (calib), "
                 "each weighing half",
    "calib": "the calibration artists, never trained on (calib)",
    "val": "the training artists' held-out paintings (val)",
}


def _attribution_table(figures: dict, prefix: str, renamed: dict) -> list[str]:
    lines = ["| figure | pbn attribute | 95% interval | baselines |", "| --- | --- | --- | --- |"]
    for key, name, bases in ATTRIBUTION:
        key = renamed.get(key, prefix + key)
        if key not in figures:
            continue
        lo, hi = figures[f"{key}_ci"]
        bases = [renamed.get(b, prefix + b) for b in bases]
        before = "; ".join(f"{figures[b]:.3f} ({'k-NN vote' if 'knn' in b else 'raw best score'})"
                           for b in bases if b in figures)
        lines.append(f"| {name} | {figures[key]:.3f} | {lo:.3f} – {hi:.3f} | {before} |")
    return lines


UNSEEN_NAMES = {"auroc": "open_set_auroc", "auroc_raw": "open_set_auroc_raw", "unknown_rejected": "unknown_rejected",
                "known_rejected": "known_rejected"}


def attribution_lines(figures: dict) -> list[str]:
    """The report's attribution sections (docs/metrics.md, "Attribution"): the workspace, both kinds of hand at
    once, then unseen artists."""
    lines = []
    deals = figures.get("workspace_fold_divisions", 1)
    pooled = f", divided {deals} ways and pooled" if deals > 1 else ""
    if figures.get("workspace_hands"):
        lines += ["## Who painted it: among the workspace's trained hands", "",
                  f"Every training artist is a known hand ({figures['workspace_hands']}, their "
                  f"{figures['workspace_gallery']} training paintings the gallery); queries: "
                  f"{figures['workspace_known_queries']} held-out paintings of theirs (val) and "
                  f"{figures['workspace_unknown_queries']} by artists never trained on (test, calib), known and unknown "
                  f"weighing half each. Cross-fitted in {figures['workspace_folds']} folds of artists{pooled}: no query "
                  f"is answered by a model fitted on its artist. A name is given from p(top hand) ≥ "
                  f"{figures['workspace_name_at']:.2f}.", "", *_attribution_table(figures, "workspace_", {}), ""]
    if figures.get("mixed_trained_hands"):
        lines += ["## Who painted it: trained and new hands at once", "",
                  f"As `pbn attribute` asks by default: the {figures['mixed_trained_hands']} trained hands beside "
                  f"{figures['mixed_new_hands']} test artists as new known hands (half of each one's paintings the "
                  f"gallery; {figures['mixed_divisions']} seeded divisions of the test artists per fold). Queries: the "
                  "val paintings, the new hands' other paintings, the other test artists' and the calib paintings "
                  "(unknown hands); the workspace's folds. Each kind's own top-1 says whether a painting by a new "
                  "hand comes first against the trained hands.", "", *_attribution_table(figures, "mixed_", {}), ""]
    if figures.get("attribution_divisions"):
        spaces = figures.get("attribution_spaces") or {}
        lines += ["## Who painted it: among unseen artists", "",
                  f"The split's {figures['attribution_artists']} artists divided {figures['attribution_divisions']} "
                  "times (seeded) into known hands (half of each one's paintings form the gallery, the rest are "
                  "queries) and unknown hands (all their paintings are queries); 95% intervals from the bootstrap "
                  f"over artists. p(hand) fitted on {figures['attribution_probability_fitted_on']}.",
                  *([f"Scored: trained hands {spaces.get('trained')}; new hands {spaces.get('new')} (each chosen on "
                     "its episodes; docs/metrics.md)."] if spaces else []), "",
                  *_attribution_table(figures, "attribution_", UNSEEN_NAMES), ""]
    return lines


def time_lines(figures: dict) -> list[str]:
    """Where eval's time went: each phase, and each part's paintings embedded now against those asked for."""
    if not figures.get("seconds"):
        return []
    lines = ["## Where the time went", "", "| phase | seconds |", "| --- | --- |"]
    lines += [f"| {phase} | {seconds:.1f} |" for phase, seconds in figures["seconds"].items()]
    now, of = figures.get("embedded_now", {}), figures.get("embedded_of", {})
    parts = ", ".join(f"{name} {now.get(name, 0):,} of {n:,}" for name, n in of.items())
    return lines + ["", f"Paintings embedded by this eval ({figures.get('engine', 'torch')}), the rest read from the "
                        f"run's embedding store: {parts}. A painting in several parts is embedded once.", ""]


def write_report(folder: Path, title: str, figures: dict, pictures: dict[str, str], config: dict | None,
                 baseline: dict | None, counts: dict, curves: Path | None) -> Path:
    lines = [f"# {title}", ""]
    lines += [
        f"Split `{figures['split']}`: {figures['n_paintings']} paintings by {figures['n_artists']} artists"
        + (" never seen in training." if figures["split"] == "test" else "."),
        f"{figures['n_triplets']:,} seeded triplets; {figures['n_pairs']:,} pairs in {figures['n_groups']} group(s); "
        f"{figures['n_queries']} retrieval queries; seed {figures['seed']}. Intervals: 95%, bootstrap over artists "
        f"({figures['bootstrap_replicates']} replicates).",
        "",
        "| figure | value | 95% interval | " + ("colour-histogram baseline | " if baseline else "") + "meaning |",
        "| --- | --- | --- | " + ("--- | " if baseline else "") + "--- |",
    ]
    for key, name, meaning in FIGURES:
        lo, hi = figures[f"{key}_ci"]
        base = f"{baseline.get(key, float('nan')):.3f} | " if baseline else ""
        lines.append(f"| {name} | {figures[key]:.3f} | {lo:.3f} – {hi:.3f} | {base}{meaning} |")
    fitted = figures.get("calibration_fitted_on")
    lines += ["", f"Verdict threshold: distance ≤ {figures['threshold']:.3f} means the same artist; it and p(same) "
              f"are fitted on {CALIBRATION_WORDS.get(fitted, f'the {fitted} split')} (docs/metrics.md)."]
    if fitted == "train":
        lines += ["", "There was no val or calib split with enough pairs, so the verdict was fitted on the training "
                  "pairs: p(same) will be overconfident on new artists."]
    lines += ["", *attribution_lines(figures)]
    if curves is not None and curves.exists():
        shutil.copyfile(curves, folder / "curves.png")
        pictures = {"curves.png": "training loss and validation figures per epoch", **pictures}
    for name, caption in pictures.items():
        lines += [f"## {caption[0].upper() + caption[1:]}", "", f"![{caption}]({name})", ""]
    lines += ["## Data", ""] + [f"- {k}: {v}" for k, v in counts.items()] + [""]
    lines += time_lines(figures)
    if config is not None:
        lines += ["## Configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    path = folder / "report.md"
    write_text(path, "\n".join(lines))
    return path
