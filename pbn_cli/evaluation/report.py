"""The pictures and report.md of one evaluation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from pbn_cli.core.atomic import write_text
from pbn_cli.evaluation import plots
from pbn_cli.evaluation.scores import FIGURES
from pbn_cli.model import metrics



def write_pictures(folder: Path, emb, artists, images, figures: dict, seed: int, pairs: tuple) -> dict[str, str]:
    """Every picture of an evaluation (``pairs``: ``metrics.pair_scores``'s result); returns file name -> caption."""
    artists = np.asarray(artists, dtype=object)
    made: dict[str, str] = {}
    scores, same, pi, pj, _ = pairs
    plots.roc_curve(scores, same, figures["pair_auc"], folder / "roc.png")
    made["roc.png"] = "ROC curve of pairs within groups"
    plots.distance_histograms(-scores, same, figures["threshold"], folder / "distances.png")
    made["distances.png"] = "distances of same-artist and different-artist pairs, with the verdict threshold"
    t = metrics.sample_triplets(artists, 8, seed)
    if len(t):
        dp = metrics.row_distances(emb[t[:, 0]], emb[t[:, 1]])
        dn = metrics.row_distances(emb[t[:, 0]], emb[t[:, 2]])
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
    method = plots.embedding_map(emb, artists, folder / "map.png", seed=seed)
    made["map.png"] = f"{method} map of the embeddings, coloured by artist (up to 30 artists)"
    return made


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
        base = f"{baseline[key]:.3f} | " if baseline else ""
        lines.append(f"| {name} | {figures[key]:.3f} | {lo:.3f} – {hi:.3f} | {base}{meaning} |")
    fitted = figures.get("calibration_fitted_on")
    lines += ["", f"Verdict threshold: distance ≤ {figures['threshold']:.3f} means the same artist"
              + (f" (fitted on the {fitted} split)." if fitted else " (fitted on this split).")]
    if fitted and fitted != "val":
        lines += ["", "The val split had too few same-artist pairs, so the threshold was fitted on training pairs: "
                  "verdicts on new artists will be less accurate than that fit suggests."]
    lines.append("")
    if curves is not None and curves.exists():
        shutil.copyfile(curves, folder / "curves.png")
        pictures = {"curves.png": "training loss and validation figures per epoch", **pictures}
    for name, caption in pictures.items():
        lines += [f"## {caption[0].upper() + caption[1:]}", "", f"![{caption}]({name})", ""]
    lines += ["## Data", ""] + [f"- {k}: {v}" for k, v in counts.items()] + [""]
    if config is not None:
        lines += ["## Configuration", "", "```json", json.dumps(config, indent=2), "```", ""]
    path = folder / "report.md"
    write_text(path, "\n".join(lines))
    return path
