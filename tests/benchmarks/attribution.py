"""Attribution variants on real paintings: which score names the right hand, and how many calib artists the
probabilities need.

    python tests/benchmarks/attribution.py -w WORKSPACE [--run RUN] [--seed 0]

Reads every painting's embedding from the run's store (`pbn eval` fills it)
and prints these tables (docs/benchmarks.md, "Attribution among hundreds of
hands"):

1. The workspace protocol (every training artist a known hand, its training
   paintings the gallery; val paintings the known queries, calib and test
   the unknown ones): top-1 and top-5 of val queries among all trained
   hands and the open-set AUROC of the best score, for every space
   `answers/attribution_fitting.py` chooses among (whitening power, prototype or
   nearest paintings, background term), for a softmax classifier over the
   training artists fitted on the training paintings' embeddings, and for
   the k-NN vote.
2. The unseen-artist protocol (divisions of the test artists), the same
   spaces: top-1 and AUROC.
3. Calibration against the number of calib artists: the test artists cut
   into two halves by a seeded draw; m of the first half play calib (the
   probability model's unknown and new hands), the second half is measured
   (the unseen protocol among them; and the workspace protocol as eval runs
   it, with those m as calib and the second half as test): the calibration
   error of p(top hand) per m.
4. ``--only tta``: test-time augmentation, each painting's embedding averaged
   with its mirror image's, against the embeddings as stored (the mirror
   images' embeddings are kept beside the workspace's folders, once).
5. ``--only rule``: where "unknown hand" starts. The attribution model
   fitted as `pbn eval` fits it; for each level of p(unknown hand) from
   which the answer would be "unknown hand", the share of unknown hands so
   answered and of known hands wrongly so answered, in both protocols (the
   workspace's cross-fitted as eval does), beside the rule "p(unknown hand)
   at least p(top hand)".
6. ``--only transfer``: does p(unknown hand) carry from the calib artists to
   others? Draws of 11 test artists measured (the unseen protocol); the
   probabilities fitted on the calib artists, on them and 4 or 8 of the
   other test artists, and (the oracle) on the measured artists themselves:
   the error of p(top hand), the mean p(unknown hand) (half the queries are
   by unknown hands) and both rejections at the rule.
7. ``--only default``: the default space per kind of hand (prototypes for
   both, the blend of prototype and nearest paintings for both, the blend
   for trained hands alone: the kept one), each fitted and measured as
   `pbn eval` does: the figures of all three protocols eval reports.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from _common import machine
from pbn_cli.core.runs import find_run
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.cache import CacheData
from pbn_cli.evaluation import attribution as E
from pbn_cli.answers import attribution as A
from pbn_cli.answers import attribution_fitting as F
from pbn_cli.model import trained
from pbn_cli.answers.calibration import expected_calibration_error
from pbn_cli.answers.metrics import auc


def embeddings(ws: Workspace, run: str, split: str) -> A.Paintings:
    model = trained.from_checkpoint(ws, find_run(ws, run), "best")
    data = CacheData(ws)
    rows = data.split(split)
    return A.Paintings(model.embeddings(ws, data, rows, torch.device("cpu")), rows.artists, rows.image_ids)


def flipped(ws: Workspace, run: str, split: str, stored: A.Paintings) -> A.Paintings:
    """Test-time augmentation: each painting's embedding averaged with its mirror image's (then normalised)."""
    from pbn_cli.networks.embed import embed_images

    model = trained.from_checkpoint(ws, find_run(ws, run), "best")
    data = CacheData(ws)
    rows = data.split(split)
    device = torch.device("cpu")
    kept = Path(ws.root) / f"mirror-{model.fingerprint()}-{split}.npy"  # the mirror images' embeddings, once
    if kept.exists():
        return A.Paintings(A.normalise(A.normalise(stored.emb) + A.normalise(np.load(kept))), stored.artists, stored.ids)
    mirror = embed_images(model.network(device), lambda idx: data.gather(rows.rows[idx])[:, :, ::-1], len(rows.rows),
                          device)
    np.save(kept, mirror)
    return A.Paintings(A.normalise(A.normalise(stored.emb) + A.normalise(mirror)), stored.artists, stored.ids)


def classifier_scores(train: A.Paintings, queries: A.Paintings, names: np.ndarray,
                      weight_decay: float = 1e-3) -> np.ndarray:
    """A softmax classifier over the training artists on normalised embeddings (L-BFGS, L2): its logits."""
    x = torch.from_numpy(A.normalise(train.emb)).double()
    y = torch.from_numpy(np.searchsorted(names, train.artists))
    w = torch.zeros(x.shape[1], len(names), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(names), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + weight_decay * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (torch.from_numpy(A.normalise(queries.emb)).double() @ w + b).numpy()


def within_hand_space(train: A.Paintings, power: float, shrink: float) -> A.Space:
    """Whitening by the spread of paintings around their own hand's mean (shrunk towards a multiple of the
    identity): directions that tell hands apart weigh more than those along which one hand varies."""
    x = A.normalise(train.emb).astype(np.float64)
    _, codes = np.unique(train.artists, return_inverse=True)
    means = np.zeros((codes.max() + 1, x.shape[1]))
    np.add.at(means, codes, x)
    means /= np.bincount(codes)[:, None]
    within = x - means[codes]
    cov = within.T @ within / len(x)
    cov = (1 - shrink) * cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))
    lam, vec = np.linalg.eigh(cov)
    return A.Space(power, "prototype", 0, np.zeros(x.shape[1], np.float32),
                   (vec / np.maximum(lam, 1e-12) ** power).astype(np.float32))


def ranks(s: np.ndarray, names: np.ndarray, artists: np.ndarray) -> np.ndarray:
    own = np.searchsorted(names, artists)
    return (s > s[np.arange(len(s)), own][:, None]).sum(1)


def spaces(background: A.Paintings):
    for power in F.POWERS:
        base = A.space(background.emb, power)
        for aggregate in A.AGGREGATES:
            for k in F.KS:
                yield A.Space(power, aggregate, k, base.mean, base.projection)


def tta_table(train: A.Paintings, val: A.Paintings, unknown: A.Paintings, test: A.Paintings, seed: int,
              label: str) -> None:
    """The prototype spaces of every whitening (and one of the nearest paintings) on both protocols."""
    names = np.unique(train.artists)
    val = val.of(names)
    asked = A.Paintings.join([val, unknown])
    is_known = np.r_[np.ones(len(val.ids), bool), np.zeros(len(unknown.ids), bool)]
    for power, aggregate, k in [(p, "prototype", k) for p in F.POWERS for k in F.KS] + [(0.5, "nearest", F.KS[-1])]:
        base = A.space(train.emb, power)
        sp = A.Space(power, aggregate, k, base.mean, base.projection)
        att = A.AttributionModel({"trained": sp, "new": sp}, train.emb, train.artists, train.ids, names)
        known = A.KnownHands.from_gallery(att, train.emb, train.artists, train.ids)
        s = A.scores(att, known, asked.emb, asked.ids)
        r = ranks(s[is_known], names, val.artists)
        us, _, _, labels, w = F.new_hand_episodes(att, test, seed).padded()
        kk = labels >= 0
        top1 = float((w * (us.argmax(1) == labels))[kk].sum() / w[kk].sum())
        print(f"| {label}: {sp.describe()} | {(r == 0).mean():.3f} | {(r < 5).mean():.3f} | "
              f"{auc(s.max(1), is_known):.3f} | {top1:.3f} |", flush=True)


def rule_table(train: A.Paintings, val: A.Paintings, calib: A.Paintings, test: A.Paintings, seed: int) -> None:
    """Unknown hands answered "unknown hand" against known hands wrongly so, per level of p(unknown hand)."""
    answers = {"unseen": E.unseen_answers(test, F.fit_attribution(train, val, calib, seed), seed),
               "workspace": E.workspace_answers(train, val, calib, test, seed,
                                                E.cross_fitted(train, val, calib, test, seed))}

    def rates(ans: E.Answers, said: np.ndarray) -> str:
        k, w = ans.known, ans.weight
        return f"{(w * said)[~k].sum() / w[~k].sum():.3f} / {(w * said)[k].sum() / w[k].sum():.3f}"

    print("\n## Where \"unknown hand\" starts: unknown hands so answered / known hands wrongly so answered\n")
    print("| \"unknown hand\" when | unseen protocol | workspace protocol |\n| --- | --- | --- |")
    unseen, workspace = answers["unseen"], answers["workspace"]
    print(f"| p(unknown hand) ≥ p(top hand) | {rates(unseen, unseen.unknown >= unseen.top)} | "
          f"{rates(workspace, workspace.unknown >= workspace.top)} |")
    for level in (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7):
        mark = " (the rule)" if level == A.UNKNOWN_AT else ""
        print(f"| p(unknown hand) ≥ {level}{mark} | {rates(answers['unseen'], answers['unseen'].unknown >= level)} | "
              f"{rates(answers['workspace'], answers['workspace'].unknown >= level)} |", flush=True)


def transfer_table(train: A.Paintings, val: A.Paintings, calib: A.Paintings, test: A.Paintings, seed: int,
                   draws: int = 6, measured: int = 11) -> None:
    names = np.unique(test.artists)
    rows: dict = {}

    def record(key, att: A.AttributionModel, asked: A.Paintings) -> None:
        a = E.unseen_answers(asked, att, seed)
        k, w, said = a.known, a.weight, a.unknown >= A.UNKNOWN_AT
        rows.setdefault(key, []).append((expected_calibration_error(a.top, a.right, w), np.average(a.unknown, weights=w),
                                         (w * said)[~k].sum() / w[~k].sum(), (w * said)[k].sum() / w[k].sum()))

    for draw in range(draws):
        order = np.random.default_rng([seed, draw, 21]).permutation(names)
        asked, spare = test.of(order[:measured]), order[measured:]
        for extra in (0, 4, 8):
            att = F.fit_attribution(train, val, A.Paintings.join([calib, test.of(spare[:extra])]), seed)
            record(f"{len(np.unique(calib.artists))} calib artists + {extra} others", att, asked)
        att.open_set = F.fit_open_set(F.new_hand_episodes(att, asked, seed))
        record("the measured artists themselves (oracle)", att, asked)
    print(f"\n## p(unknown hand) from calib artists to others ({draws} draws of {measured} test artists measured)\n")
    print("| fitted on | error of p(top hand) | mean p(unknown hand) (truth 0.5) | unknown rejected | known rejected |"
          "\n| --- | --- | --- | --- | --- |")
    for key, v in rows.items():
        v = np.asarray(v)
        print(f"| {key} | {v[:, 0].mean():.3f} | {v[:, 1].mean():.3f} | {v[:, 2].mean():.3f} | {v[:, 3].mean():.3f} "
              f"(draws {v[:, 3].min():.3f}–{v[:, 3].max():.3f}) |", flush=True)


def hub_scores(train: A.Paintings, asked: A.Paintings, names: np.ndarray, power: float, k: int,
               weight: float) -> np.ndarray:
    """The prototype score less the query's background term (as the default) and less ``weight`` times the hand's
    own: the mean similarity of its prototype to its k closest training paintings by other hands (a hand near
    everything is not thereby the answer; CSLS-like)."""
    sp = A.space(train.emb, power)
    zg, zq = sp.whiten(train.emb), sp.whiten(asked.emb)
    gl = np.searchsorted(names, train.artists)
    proto = A.normalise(np.stack([zg[gl == a].mean(0) for a in range(len(names))]))
    r_query = -np.sort(-(zq @ zg.T), 1)[:, :A.BACKGROUND_K].mean(1)
    pg = proto @ zg.T
    r_hand = np.array([-np.sort(-pg[a][gl != a])[:k].mean() for a in range(len(names))])
    return zq @ proto.T - r_query[:, None] - weight * r_hand[None, :]


def workspace_table(train: A.Paintings, val: A.Paintings, unknown: A.Paintings) -> None:
    names = np.unique(train.artists)
    val = val.of(names)
    print(f"\n## Workspace protocol: {len(names)} trained hands, {len(train.ids)} gallery paintings, {len(val.ids)} "
          f"known queries (val), {len(unknown.ids)} unknown (calib + test)\n")
    print("| score | top-1 | top-5 | open-set AUROC (best score) |\n| --- | --- | --- | --- |")
    asked = A.Paintings.join([val, unknown])
    is_known = np.r_[np.ones(len(val.ids), bool), np.zeros(len(unknown.ids), bool)]

    def row(label: str, s: np.ndarray) -> None:
        r = ranks(s[is_known], names, val.artists)
        print(f"| {label} | {(r == 0).mean():.3f} | {(r < 5).mean():.3f} | {auc(s.max(1), is_known):.3f} |", flush=True)

    for sp in spaces(train):
        att = A.AttributionModel({"trained": sp, "new": sp}, train.emb, train.artists, train.ids, names)
        known = A.KnownHands.from_gallery(att, train.emb, train.artists, train.ids)
        row(sp.describe(), A.scores(att, known, asked.emb, asked.ids))
    for shrink in (0.1, 0.5):
        for power in (0.25, 0.5):
            sp = within_hand_space(train, power, shrink)
            att = A.AttributionModel({"trained": sp, "new": sp}, train.emb, train.artists, train.ids, names)
            known = A.KnownHands.from_gallery(att, train.emb, train.artists, train.ids)
            row(f"within-hand whitening (LDA-like: power {power}, shrinkage {shrink}), prototype",
                A.scores(att, known, asked.emb, asked.ids))
    for decay in (1e-4, 1e-3):
        row(f"softmax classifier over the training artists (L2 {decay:g})", classifier_scores(train, asked, names, decay))
    for k, weight in ((5, 0.5), (20, 0.5), (50, 0.5), (20, 1.0)):
        row(f"square-root whitening, prototype, background, less {weight:g} x the hand's own ({k} closest)",
            hub_scores(train, asked, names, 0.25, k, weight))
    parts = {}
    for power, aggregate in ((0.25, "prototype"), (0.5, "prototype"), (0.25, "nearest")):
        base = A.space(train.emb, power)
        sp = A.Space(power, aggregate, A.BACKGROUND_K, base.mean, base.projection)
        att = A.AttributionModel({"trained": sp, "new": sp}, train.emb, train.artists, train.ids, names)
        s = A.scores(att, A.KnownHands.from_gallery(att, train.emb, train.artists, train.ids), asked.emb, asked.ids)
        parts[(power, aggregate)] = (s - s[np.isfinite(s)].mean()) / s[np.isfinite(s)].std()
    row("sum of standardised scores: square-root and full whitening, prototypes, background",
        parts[(0.25, "prototype")] + parts[(0.5, "prototype")])
    row("sum of standardised scores: square-root whitening, prototype and 3 nearest, background",
        parts[(0.25, "prototype")] + parts[(0.25, "nearest")])
    e = A.normalise(asked.emb) @ A.normalise(train.emb).T
    gl = np.searchsorted(names, train.artists)
    vote = E._vote(e[is_known], gl)
    print(f"| k-NN vote ({E.KNN} nearest) | {(vote == np.searchsorted(names, val.artists)).mean():.3f} | – | – |")


def unseen_table(background: A.Paintings, test: A.Paintings, seed: int) -> None:
    print(f"\n## Unseen-artist protocol: {len(np.unique(test.artists))} test artists, {F.DIVISIONS} divisions\n")
    print("| score | top-1 | open-set AUROC (best score) |\n| --- | --- | --- |")
    for sp in spaces(background):
        att = A.AttributionModel({"trained": sp, "new": sp}, background.emb, background.artists, background.ids,
                           np.unique(background.artists))
        ep = F.new_hand_episodes(att, test, seed)
        s, _, _, labels, w = ep.padded()
        k = labels >= 0
        top1 = float((w * (s.argmax(1) == labels))[k].sum() / w[k].sum())
        print(f"| {sp.describe()} | {top1:.3f} | {auc(np.where(np.isfinite(s.max(1)), s.max(1), -9), k):.3f} |",
              flush=True)


def calib_table(background: A.Paintings, val: A.Paintings, test: A.Paintings, seed: int) -> None:
    names = np.random.default_rng([seed, 11]).permutation(np.unique(test.artists))
    half = len(names) // 2
    measured = test.of(names[half:])
    print(f"\n## Calibration error of p(top hand) against the number of calib artists (measured on "
          f"{len(names) - half} other unseen artists)\n")
    print("| calib artists | unseen protocol ECE | top-1 | workspace protocol ECE | named precision | named coverage |"
          "\n| --- | --- | --- | --- | --- | --- |")
    for m in range(2, half + 1, 2 if half > 6 else 1):
        calib = test.of(names[:m])
        att = F.fit_attribution(background, val, calib, seed)
        unseen, _ = E.unseen_figures(measured, att, seed, replicates=20)
        ws, _ = E.workspace_figures(background, val, calib, measured, seed, replicates=20)
        print(f"| {m} | {unseen.get('attribution_ece', float('nan')):.3f} | {unseen.get('attribution_top1', float('nan')):.3f} | "
              f"{ws.get('workspace_ece', float('nan')):.3f} | {ws.get('workspace_named_precision', float('nan')):.3f} | "
              f"{ws.get('workspace_named_coverage', float('nan')):.3f} |", flush=True)


DEFAULTS = {  # candidate defaults of ``attribution_fitting.DEFAULT``, per kind of hand
    "prototype for both": {"trained": (0.25, "prototype", A.BACKGROUND_K), "new": (0.25, "prototype", A.BACKGROUND_K)},
    "blend for both": {"trained": (0.25, "blend", A.BACKGROUND_K), "new": (0.25, "blend", A.BACKGROUND_K)},
    "blend for trained hands (kept)": {"trained": (0.25, "blend", A.BACKGROUND_K),
                                       "new": (0.25, "prototype", A.BACKGROUND_K)},
}
DEFAULT_FIGURES = ("workspace_top1", "workspace_ece", "workspace_named_precision", "workspace_named_coverage",
                   "open_set_auroc", "attribution_top1", "attribution_ece", "unknown_rejected", "known_rejected",
                   "mixed_top1_trained", "mixed_top1_new", "mixed_ece")


def default_table(train: A.Paintings, val: A.Paintings, calib: A.Paintings, test: A.Paintings, seed: int) -> None:
    """Each candidate default fitted and measured as `pbn eval` does (its folds, its seed), point figures only."""
    print("\n## The default space per kind of hand, as `pbn eval` measures it\n")
    print("| default | " + " | ".join(DEFAULT_FIGURES) + " |\n|" + " --- |" * (len(DEFAULT_FIGURES) + 1))
    kept = F.DEFAULT
    try:
        for label, default in DEFAULTS.items():
            F.DEFAULT = default
            att = F.fit_attribution(train, val, calib, seed)
            out, _ = E.unseen_figures(test, att, seed, replicates=2)
            folds = E.cross_fitted(train, val, calib, test, seed)
            out.update(E.workspace_figures(train, val, calib, test, seed, replicates=2, folds=folds)[0])
            out.update(E.mixed_figures(train, val, calib, test, seed, replicates=2, folds=folds)[0])
            print(f"| {label} | " + " | ".join(f"{out.get(k, float('nan')):.3f}" for k in DEFAULT_FIGURES) + " |",
                  flush=True)
    finally:
        F.DEFAULT = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-w", "--workspace", required=True)
    parser.add_argument("--run", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=["workspace", "unseen", "calib"])
    a = parser.parse_args()
    ws = Workspace(Path(a.workspace))
    t0 = time.monotonic()
    train, val, calib, test = (embeddings(ws, a.run, s) for s in ("train", "val", "calib", "test"))
    print(f"# Attribution variants ({machine()}); embeddings read in {time.monotonic() - t0:.0f} s")
    unknown = A.Paintings.join([calib, test])
    if "tta" in a.only:
        print("\n## Test-time augmentation (mirror images)\n\n| embedding: space | workspace top-1 | top-5 | AUROC "
              "(best score) | unseen top-1 |\n| --- | --- | --- | --- | --- |")
        tta_table(train, val, unknown, test, a.seed, "as stored")
        mirrored = {s: flipped(ws, a.run, s, e) for s, e in zip(("train", "val", "calib", "test"), (train, val, calib, test))}
        tta_table(mirrored["train"], mirrored["val"], A.Paintings.join([mirrored["calib"], mirrored["test"]]),
                  mirrored["test"], a.seed, "with mirror")
    if "rule" in a.only:
        rule_table(train, val, calib, test, a.seed)
    if "transfer" in a.only:
        transfer_table(train, val, calib, test, a.seed)
    if "workspace" in a.only:
        workspace_table(train, val, unknown)
    if "unseen" in a.only:
        unseen_table(train, test, a.seed)
    if "calib" in a.only:
        calib_table(train, val, test, a.seed)
    if "default" in a.only:
        default_table(train, val, calib, test, a.seed)


if __name__ == "__main__":
    main()
