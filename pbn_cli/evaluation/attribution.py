"""Attribution's figures under three protocols (docs/metrics.md, "Attribution").

**Unseen artists** (keys ``attribution_*``, ``open_set_*``, ...): the
evaluated split's artists, never trained on, divided (seeded,
``answers/attribution_fitting.divisions``) into known hands (half of each one's
paintings form the gallery, the rest are queries) and unknown hands (all
their paintings are queries).

**The workspace** (keys ``workspace_*``): how the tool is used. The known
hands are all the training artists, their training paintings the gallery;
the queries are their held-out paintings (val) and paintings by artists
never trained on (test and calib), which should be answered "unknown hand".
The attribution model is cross-fitted: the val and calib artists are dealt
into FOLDS folds by artist (each fold as many calib artists as can be), and
each fold's queries are answered by a model fitted on the other folds
(``answers/attribution_fitting.fit_attribution``), so no figure rests on a
painting its model was fitted on, and each model is fitted on nearly every
calib artist, as the model kept is on all of them. The division is made
FOLD_DIVISIONS times (seeded) and the answers of all of them pooled, each
weighing the same.

**Both kinds at once** (keys ``mixed_*``): as `attribute` asks by default,
the workspace's trained hands beside new ones: divisions of the test
artists join them as known hands (half of each one's paintings the
gallery), with the workspace protocol's folds. Beside the usual figures,
each kind's own top-1 (``mixed_top1_trained``, ``mixed_top1_new``): does a
new painter's work come first against the trained hands of its school?

Per protocol: top-1 and top-5 (known queries), open-set AUROC (known against
unknown queries ranked by p(unknown)), the calibration error of p(top hand)
(is the top hand right?), the three answers' shares and the precision of
named answers against their coverage. Known and unknown queries weigh half
each, as the probability model assumes. Beside them, what ``search`` gave
before: the k-nearest-neighbour vote (top-1) and the raw best score (mean
cosine similarity to an artist's 3 closest gallery paintings; AUROC).
Intervals come from the bootstrap over artists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from pbn_cli.answers import attribution as A
from pbn_cli.answers.attribution_fitting import DIVISIONS, divisions, fit_attribution
from pbn_cli.answers.calibration import expected_calibration_error, reliability
from pbn_cli.answers.metrics import artist_codes, weighted_auc
from pbn_cli.evaluation import bootstrap

KNN = 10  # neighbours of the vote `pbn search` shows
RAW_TOP = 3  # gallery paintings whose mean similarity is the raw artist score
LEVELS = np.round(np.arange(0.3, 0.96, 0.05), 2)  # naming levels of the precision-coverage curve
FOLDS = 8  # the val and calib artists dealt into FOLDS: with split's 8 calib artists each model is fitted on 7 of them;
#            with 2 folds a model fitted on 4 measured a weaker one than eval keeps (docs/benchmarks.md)
FOLD_DIVISIONS = 1  # seeded divisions into FOLDS, their answers pooled
MIXED_DIVISIONS = 5  # of the test artists, per fold (mixed_answers)


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


@dataclass
class Answers:
    """Queries answered among known hands, one entry per query in each field."""

    rank: np.ndarray  # of the true hand (known queries; -1: an unknown one)
    top: np.ndarray  # p(top hand)
    unknown: np.ndarray  # p(unknown)
    right: np.ndarray  # the top hand is the true one
    vote: np.ndarray  # the k-NN vote is right
    raw: np.ndarray  # the raw best score
    raw_right: np.ndarray  # the hand of the raw best score is the true one
    weight: np.ndarray  # known and unknown queries half each within an episode (``_halves``)
    code: np.ndarray  # the artist's code
    name_at: np.ndarray  # the naming level of the top hand's kind
    trained: np.ndarray  # the true hand is a known trained hand (False: a new one, or an unknown one)

    @property
    def verdicts(self) -> np.ndarray:
        """Each query's answer under the three-way rule (``answers/attribution.verdicts``)."""
        return A.verdicts(self.top, self.unknown, self.name_at)

    @property
    def known(self) -> np.ndarray:
        return self.rank >= 0

    @staticmethod
    def join(parts: list) -> Answers:
        return Answers(*[np.concatenate([getattr(p, f) for p in parts]) for f in Answers.__dataclass_fields__])


def answer_queries(att: A.AttributionModel, gallery: A.Paintings, queries: A.Paintings, known_mask: np.ndarray,
                   code: np.ndarray, share=1.0) -> Answers:
    """Each query's answer among the gallery's hands, with the raw score and vote beside it. Its weight is, for now,
    the ask's ``share`` of its painting (a painting asked by several models shares one weight among its asks);
    ``_halves`` makes the protocol's weights of them."""
    known = A.KnownHands.from_gallery(att, gallery.emb, gallery.artists, gallery.ids)
    s = A.scores(att, known, queries.emb, queries.ids)
    p, pu = A.probabilities(att, known, s)
    own = np.searchsorted(known.names, queries.artists)
    own_p = np.where(known_mask, p[np.arange(len(p)), np.minimum(own, len(known.names) - 1)], np.nan)
    rank = np.where(known_mask, (p > own_p[:, None]).sum(1), -1)
    raw_g, raw_q = A.normalise(gallery.emb), A.normalise(queries.emb)
    e = raw_q @ raw_g.T
    gl = np.searchsorted(known.names, gallery.artists)
    vote = _vote(e, gl) == own
    raw = _raw_scores(e, gl, len(known.names))
    top_kind = known.kinds[np.where(np.isfinite(p).any(1), np.nan_to_num(p, nan=-1).argmax(1), 0)]
    name_at = att.open_set.name_at[top_kind] if att.open_set else np.full(len(p), np.nan)
    return Answers(rank, p.max(1), pu, known_mask & (rank == 0), vote & known_mask, raw.max(1),
                   known_mask & (raw.argmax(1) == own), np.broadcast_to(np.asarray(share, float), len(p)).copy(),
                   code, name_at,
                   known_mask & (att.kinds(queries.artists) == 1))


def _figures(ans: Answers, prefix: str, replicates: int, seed: int) -> tuple[dict, dict]:
    """The figures of a set of answers with their intervals, and what the pictures need."""
    n_artists = int(ans.code.max()) + 1
    boot = bootstrap.artist_weights(n_artists, replicates, seed)
    k, verdicts = ans.known, ans.verdicts
    named, said_unknown, everyone = verdicts == A.NAMED, verdicts == A.UNKNOWN, np.ones(len(ans.known), bool)
    values = {"top1": (ans.rank == 0, k), "top5": ((ans.rank >= 0) & (ans.rank < 5), k), "knn_vote_top1": (ans.vote, k),
              "top1_raw": (ans.raw_right, k),
              "unknown_rejected": (said_unknown, ~k), "known_rejected": (said_unknown, k),
              "named_precision": (ans.right, named), "named_coverage": (named, everyone),
              "probably_share": (verdicts == A.PROBABLY, everyone)}
    if (k & ans.trained).any() and (k & ~ans.trained).any():  # both kinds asked about: each kind's first answer
        values.update(top1_trained=(ans.rank == 0, k & ans.trained), top1_new=(ans.rank == 0, k & ~ans.trained))
    out: dict = {}
    rw = boot[:, ans.code] * ans.weight  # each replicate's weight of each query: its artist's draws x its own
    for key, (v, among) in values.items():
        w = ans.weight * among
        out[f"{prefix}{key}"] = float((w * v).sum() / w.sum()) if w.sum() > 0 else float("nan")
        total = (rw * among).sum(1)
        samples = np.where(total > 0, (rw * among * v).sum(1) / np.maximum(total, 1e-300), np.nan)
        out[f"{prefix}{key}_ci"] = bootstrap.interval(samples)
    for key, score in (("auroc", -ans.unknown), ("auroc_raw", ans.raw)):
        out[f"{prefix}{key}"] = weighted_auc(score, k, ans.weight)
        out[f"{prefix}{key}_ci"] = bootstrap.interval(np.array([weighted_auc(score, k, r) for r in rw]))
    out[f"{prefix}ece"] = expected_calibration_error(ans.top, ans.right, ans.weight)
    out[f"{prefix}ece_ci"] = bootstrap.interval(np.array([expected_calibration_error(ans.top, ans.right, r) for r in rw]))
    out[f"{prefix}name_at"] = float(np.nanmean(ans.name_at))
    out[f"{prefix}known_queries"], out[f"{prefix}unknown_queries"] = int(k.sum()), int((~k).sum())
    curve = []
    for level in LEVELS:
        at = A.verdicts(ans.top, ans.unknown, level) == A.NAMED
        cover = float(ans.weight[at].sum() / ans.weight.sum())
        curve.append((float(level), cover, float((ans.weight * ans.right)[at].sum() / ans.weight[at].sum())
                      if at.any() else float("nan")))
    pictures = {"reliability": reliability(ans.top, ans.right, ans.weight), "curve": curve,
                "rule": (out[f"{prefix}named_coverage"], out[f"{prefix}named_precision"])}
    return out, pictures


def unseen_answers(split: A.Paintings, att: A.AttributionModel, seed: int, n: int = DIVISIONS) -> Answers:
    """The unseen-artist protocol's answers: ``n`` divisions of the split's artists into known and unknown hands."""
    codes, _ = artist_codes(split.artists)
    parts, group = [], []
    for d, (names, g, q, u) in enumerate(divisions(split.artists, seed, n)):
        asked = np.r_[q, u]
        parts.append(answer_queries(att, split.take(g), split.take(asked), np.r_[np.ones(len(q), bool),
                                    np.zeros(len(u), bool)], codes[asked]))
        group.append(np.full(len(asked), d))
    return _halves(Answers.join(parts), np.concatenate(group))


def unseen_figures(split: A.Paintings, att: A.AttributionModel, seed: int, n: int = DIVISIONS, replicates: int = 200):
    """The unseen-artist protocol on the evaluated split (its artists are new hands), and its pictures."""
    codes, _ = artist_codes(split.artists)
    if len(np.unique(codes)) < 4 or att.open_set is None:
        return {"attribution_divisions": 0}, {}
    out, pictures = _figures(unseen_answers(split, att, seed, n), "attribution_", replicates, seed)
    rename = {"attribution_auroc": "open_set_auroc", "attribution_auroc_raw": "open_set_auroc_raw",
              "attribution_unknown_rejected": "unknown_rejected", "attribution_known_rejected": "known_rejected"}
    out = {rename.get(k.removesuffix("_ci"), k.removesuffix("_ci")) + ("_ci" if k.endswith("_ci") else ""): v
           for k, v in out.items()}
    out.update(attribution_divisions=n, attribution_artists=len(np.unique(split.artists)),
               open_set_auroc_gain=out["open_set_auroc"] - out["open_set_auroc_raw"],
               attribution_probability_fitted_on=att.fitted_on.get("probability", "none"),
               attribution_spaces=att.fitted_on.get("spaces", {}))
    return out, pictures


def _codes(background: A.Paintings, val: A.Paintings, calib: A.Paintings, test: A.Paintings) -> np.ndarray:
    """The names of the trained hands' val artists and of every calib and test artist, sorted: the bootstrap's
    artist codes of both workspace protocols."""
    return np.unique(np.r_[val.of(np.unique(background.artists)).artists, calib.artists, test.artists])


def cross_fitted(background: A.Paintings, val: A.Paintings, calib: A.Paintings, test: A.Paintings, seed: int,
                 cuts: int = FOLD_DIVISIONS) -> list[tuple[A.AttributionModel, A.Paintings, A.Paintings]] | None:
    """Per fold of ``cuts`` seeded divisions of the val and calib artists into FOLDS: the attribution model fitted on
    the other folds of its division alone, and this fold's val (trained hands' held-out paintings) and calib
    paintings, which it may answer; None when there is nothing to ask or fit. ``val`` is kept to the trained hands'
    paintings. The calib artists are dealt round the folds first, then the val artists where they stopped, each in a
    seeded order: every fold holds as many calib artists as can be, so no model is fitted on fewer than the others."""
    val = val.of(np.unique(background.artists))
    if not len(val.ids) or not len(test.ids) + len(calib.ids):
        return None
    folds = []
    for cut in range(cuts):
        rng = np.random.default_rng([seed, 5, cut])
        dealt = np.r_[rng.permutation(np.unique(calib.artists)), rng.permutation(np.unique(val.artists))]
        fold_of = dict(zip(dealt, np.arange(len(dealt)) % FOLDS))
        for fold in range(FOLDS):
            mine = {name: np.array([fold_of[a] == fold for a in part.artists], bool) for name, part in
                    (("val", val), ("calib", calib))}
            att = fit_attribution(background, val.take(~mine["val"]), calib.take(~mine["calib"]), seed + cut)
            if att.open_set is None:
                return None
            folds.append((att, val.take(mine["val"]), calib.take(mine["calib"])))
    return folds


def workspace_answers(background: A.Paintings, val: A.Paintings, calib: A.Paintings, test: A.Paintings,
                      seed: int, folds: list | None) -> Answers | None:
    """The workspace protocol's answers: every training artist a known hand (its training paintings the gallery),
    queries from val (known) and from test and calib (unknown), each fold answered by the model fitted on the others
    (``folds``: ``cross_fitted``'s); None when there is nothing to ask or fit (``folds`` None)."""
    if folds is None:
        return None
    trained, names = np.unique(background.artists), _codes(background, val, calib, test)
    own, every = _shares(len(folds))
    parts = []
    for att, val_f, calib_f in folds:  # test artists are in no fitting: asked in every fold
        asked = A.Paintings.join([val_f, calib_f, test])
        if not len(asked.ids):  # more folds than artists and no test artist: this fold asks nothing
            continue
        parts.append(answer_queries(att, background, asked, np.isin(asked.artists, trained),
                                    np.searchsorted(names, asked.artists),
                                    np.r_[np.full(len(val_f.ids) + len(calib_f.ids), own),
                                          np.full(len(test.ids), every)]))
    answers = Answers.join(parts)
    return _halves(answers, np.zeros(len(answers.rank), int))


def _new_hands(test: A.Paintings, seed: int, n: int):
    """The divisions of the test artists that join the trained hands in ``mixed_answers``."""
    return divisions(test.artists, seed + 700, n)


def mixed_answers(background: A.Paintings, val: A.Paintings, calib: A.Paintings, test: A.Paintings, seed: int,
                  folds: list | None, n: int = MIXED_DIVISIONS) -> Answers | None:
    """Both kinds of hand at once, as `attribute` asks by default: every training artist a known hand (its training
    paintings the gallery) beside ``n`` seeded divisions of the test artists (half of them known, half of each one's
    paintings the gallery); queries: the val paintings, the known test artists' other paintings, the unknown test
    artists' and this fold's calib paintings. Cross-fitted as ``workspace_answers`` (``folds``); None when there is
    nothing to ask or fit, or fewer than 2 test artists."""
    if folds is None or len(np.unique(test.artists)) < 2:
        return None
    names = _codes(background, val, calib, test)
    own, every = _shares(len(folds))
    parts, group = [], []
    for att, val_f, calib_f in folds:
        for d, (_, g, q, u) in enumerate(_new_hands(test, seed, n)):
            gallery = A.Paintings.join([background, test.take(g)])
            asked = A.Paintings.join([val_f, test.take(q), test.take(u), calib_f])
            parts.append(answer_queries(att, gallery, asked, np.isin(asked.artists, gallery.artists),
                                        np.searchsorted(names, asked.artists),
                                        np.r_[np.full(len(val_f.ids), own), np.full(len(q) + len(u), every),
                                              np.full(len(calib_f.ids), own)]))
            group.append(np.full(len(asked.ids), d))
    return _halves(Answers.join(parts), np.concatenate(group))


def _shares(n_folds: int) -> tuple[float, float]:
    """What one ask weighs of its painting in the cross-fitted protocols: a val or calib painting is asked by its own
    fold's model once per division into folds, a test painting by every fold's model."""
    return FOLDS / n_folds, 1.0 / n_folds


def _halves(ans: Answers, group: np.ndarray) -> Answers:
    """Every protocol's weights from each ask's share of its painting (``answer_queries``): within each group (a
    division of artists; the workspace protocol has one) known and unknown queries weigh half each, and every painting
    on a side the same, however often it was asked (weighed per fold instead, the test paintings would outweigh the
    calib ones FOLDS times over); each group weighs the same."""
    groups = np.unique(group)
    w = np.zeros(len(ans.weight))
    for g in groups:
        for side in (ans.known, ~ans.known):
            mine = (group == g) & side
            if mine.any():
                w[mine] = 0.5 / len(groups) * ans.weight[mine] / ans.weight[mine].sum()
    return replace(ans, weight=w)


def _protocol_figures(answers: Answers | None, prefix: str, replicates: int, seed: int, sizes) -> tuple[dict, dict]:
    """A protocol's figures and pictures, with its sizes (``sizes()``: names after the prefix); when nothing was asked,
    its first size alone, 0."""
    if answers is None:
        return {f"{prefix}{next(iter(sizes()))}": 0}, {}
    out, pictures = _figures(answers, prefix, replicates, seed)
    out.update({f"{prefix}{key}": value for key, value in sizes().items()})
    return out, pictures


def workspace_figures(background: A.Paintings, val: A.Paintings, calib: A.Paintings, test: A.Paintings, seed: int,
                      replicates: int = 200, folds: list | None = None):
    """The workspace protocol (``workspace_answers``): its figures and pictures."""
    folds = folds or cross_fitted(background, val, calib, test, seed)
    return _protocol_figures(workspace_answers(background, val, calib, test, seed, folds), "workspace_", replicates,
                             seed, lambda: dict(hands=len(np.unique(background.artists)), gallery=len(background.ids),
                                                folds=FOLDS, fold_divisions=len(folds or []) // FOLDS,
                                                known_queries=len(val.of(np.unique(background.artists)).ids),
                                                unknown_queries=len(calib.ids) + len(test.ids)))


def mixed_figures(background: A.Paintings, val: A.Paintings, calib: A.Paintings, test: A.Paintings, seed: int,
                  replicates: int = 200, folds: list | None = None):
    """Both kinds of hand at once (``mixed_answers``): its figures, each kind's top-1 among them, and pictures."""
    folds = folds or cross_fitted(background, val, calib, test, seed)
    return _protocol_figures(mixed_answers(background, val, calib, test, seed, folds), "mixed_", replicates, seed,
                             lambda: dict(trained_hands=len(np.unique(background.artists)),
                                          new_hands=len(next(iter(_new_hands(test, seed, 1)))[0]),
                                          divisions=MIXED_DIVISIONS, folds=FOLDS,
                                          fold_divisions=len(folds or []) // FOLDS))
