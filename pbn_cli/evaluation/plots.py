"""The report's pictures: ROC, distance histograms, the model's mistakes, a map of the paintings."""

from __future__ import annotations

from pathlib import Path

from pbn_cli.core.pictures import pyplot, save_figure, short


def roc_curve(scores, same, auc: float, path: Path) -> None:
    """ROC of -distance for "same artist"."""
    import numpy as np

    plt = pyplot()
    order = np.argsort(-scores, kind="stable")
    y = same[order]
    tpr = np.r_[0, np.cumsum(y) / max(y.sum(), 1)]
    fpr = np.r_[0, np.cumsum(~y) / max((~y).sum(), 1)]
    step = max(1, len(tpr) // 5000)  # a few thousand points draw the same curve
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot(fpr[::step], tpr[::step], color="tab:blue", label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate (different artists called same)", ylabel="true positive rate", title="ROC, pairs within groups")
    ax.legend(loc="lower right")
    save_figure(fig, path)


def distance_histograms(d, same, threshold: float, path: Path, title: str = "distances of pairs on unseen artists",
                        margins: dict | None = None) -> dict:
    """Histograms of same- and different-artist distances with the threshold.

    With ``margins`` (subplots_adjust's left, right, bottom, top) the picture
    keeps them instead of being cropped tight, and the answer says where the
    axes lie in it: ``{"left", "right", "top", "bottom"}`` as shares of its
    width and height, ``{"xmin", "xmax"}`` the distances at the axes' ends (so
    a page can draw one pair's distance over it).
    """
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bins = np.linspace(0, float(np.percentile(d, 99.5)) * 1.05 + 1e-9, 60)
    ax.hist(d[~same], bins=bins, density=True, alpha=0.6, color="tab:red", label=f"different artists ({(~same).sum():,})")
    ax.hist(d[same], bins=bins, density=True, alpha=0.6, color="tab:green", label=f"same artist ({same.sum():,})")
    ax.axvline(threshold, color="black", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="distance between embeddings", ylabel="density", title=title)
    ax.legend()
    if margins:
        fig.subplots_adjust(**margins)
    box, (xmin, xmax) = ax.get_position(), ax.get_xlim()
    save_figure(fig, path, tight=not margins)
    return {"left": box.x0, "right": box.x1, "top": 1 - box.y1, "bottom": 1 - box.y0, "xmin": xmin, "xmax": xmax}

def triplet_sheet(images, artists, triplets, dp, dn, path: Path, title: str) -> None:
    """Rows of anchor, positive, negative thumbnails; distances in the titles; green when right."""
    plt = pyplot()
    n = len(triplets)
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.3 * n), squeeze=False)
    for r, (t, a, b) in enumerate(zip(triplets, dp, dn)):
        ok = a < b
        for c, (idx, label) in enumerate(zip(t, ("anchor", f"positive d={a:.3f}", f"negative d={b:.3f}"))):
            ax = axes[r, c]
            ax.imshow(images[idx])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}\n{short(artists[idx])}", fontsize=8)
            for spine in ax.spines.values():
                spine.set_edgecolor("tab:green" if ok else "tab:red")
                spine.set_linewidth(3)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.3 * n)))
    save_figure(fig, path)


def pair_sheet(images, artists, pairs, dists, path: Path, title: str) -> None:
    """Rows of two thumbnails with their distance."""
    plt = pyplot()
    n = max(1, len(pairs))
    fig, axes = plt.subplots(n, 2, figsize=(4.6, 2.3 * n), squeeze=False)
    for r, ((i, j), d) in enumerate(zip(pairs, dists)):
        for c, idx in enumerate((i, j)):
            ax = axes[r, c]
            ax.imshow(images[idx])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{short(artists[idx])}" + (f"\nd={d:.3f}" if c == 0 else "\n"), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.3 * n)))
    save_figure(fig, path)


def embedding_map(emb, artists, path: Path, max_artists: int = 30, seed: int = 0) -> str:
    """A 2-D map of the embeddings coloured by artist (t-SNE with scikit-learn, else PCA); returns the method."""
    import numpy as np

    plt = pyplot()
    names, counts = np.unique(np.asarray(artists, dtype=str), return_counts=True)
    keep_names = names[np.argsort(-counts, kind="stable")][:max_artists]
    keep = np.isin(np.asarray(artists, dtype=str), keep_names)
    x = emb[keep].astype(np.float64)
    labels = np.asarray(artists, dtype=str)[keep]
    try:
        from sklearn.manifold import TSNE

        xy = TSNE(2, perplexity=min(30, max(2, len(x) // 4)), random_state=seed, init="pca").fit_transform(x)
        method = "t-SNE"
    except ImportError:
        x = x - x.mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        xy = x @ vt[:2].T
        method = "PCA"
    fig, ax = plt.subplots(figsize=(7.5, 6))
    cmap = plt.get_cmap("tab20" if len(keep_names) <= 20 else "gist_ncar")
    for k, name in enumerate(keep_names):
        sel = labels == name
        ax.scatter(xy[sel, 0], xy[sel, 1], s=14, color=cmap(k / max(1, len(keep_names) - 1) if len(keep_names) > 20 else k), label=short(name, 18))
    ax.set(xticks=[], yticks=[], title=f"{method} of the embeddings, {len(keep_names)} artists")
    ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    save_figure(fig, path)
    return method


def reliability_diagram(p, same, ece: float, path: Path, bins: int = 10) -> None:
    """Mean predicted p(same) against the observed share of same-artist pairs, per bin, with each bin's pairs."""
    import numpy as np

    from pbn_cli.answers.calibration import reliability

    plt = pyplot()
    mass, conf, freq = reliability(np.asarray(p), np.asarray(same), bins=bins)
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.8, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfectly calibrated")
    full = mass > 0
    ax.plot(conf[full], freq[full], marker="o", color="tab:blue", label=f"pbn (ECE {ece:.3f})")
    ax.set(ylabel="share that are the same artist", xlim=(0, 1), ylim=(0, 1),
           title="Reliability of p(same), balanced pairs")
    ax.legend(loc="upper left")
    edges = np.linspace(0, 1, bins + 1)
    hist.bar(edges[:-1], mass, width=1 / bins, align="edge", color="tab:blue", alpha=0.5)
    hist.set(xlabel="predicted probability of the same artist", ylabel="pairs")
    save_figure(fig, path)


def attribution_diagram(pictures: dict, ece: float, path: Path, title: str) -> None:
    """Left: reliability of p(top hand) (is the top hand right?); right: precision of named answers against their
    coverage as the naming level moves, with the point the answer rule picks."""
    import numpy as np

    plt = pyplot()
    mass, conf, freq = pictures["reliability"]
    fig, (ax, cov) = plt.subplots(1, 2, figsize=(9.6, 4.2))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfectly calibrated")
    full = mass > 0
    ax.plot(conf[full], freq[full], marker="o", color="tab:purple", label=f"pbn (ECE {ece:.3f})")
    for x, y, m in zip(conf[full], freq[full], mass[full] / mass.sum()):
        ax.annotate(f"{m:.0%}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color="grey")
    ax.set(xlabel="p(top hand)", ylabel="share where the top hand is right", xlim=(0, 1), ylim=(0, 1),
           title="reliability of p(top hand) (grey: share of queries)")
    ax.legend(loc="upper left", fontsize=8)
    curve = np.array(pictures["curve"], float)
    cov.plot(curve[:, 1], curve[:, 2], marker=".", color="tab:purple")
    shown = set()
    for level, c, p in curve[::2]:
        if (round(c, 3), round(p, 3)) not in shown:  # low levels name the same answers: label the point once
            shown.add((round(c, 3), round(p, 3)))
            cov.annotate(f"{level:.2f}", (c, p), textcoords="offset points", xytext=(3, 3), fontsize=7, color="grey")
    c, p = pictures["rule"]
    cov.plot([c], [p], marker="*", ms=14, color="tab:red", ls="none", label=f"the answer rule: {p:.2f} right, {c:.0%} named")
    cov.set(xlabel="share of queries named", ylabel="share of named answers that are right", xlim=(0, 1),
            ylim=(0, 1.02), title="named answers: precision against coverage (grey: level)")
    cov.legend(loc="lower left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
