"""Fitting the attribution model (answers/attribution.py) on episodes: divisions of artists into known and unknown.

``fit_attribution`` chooses each kind of hand's space (``choose_space``),
then fits the probabilities (``fit_open_set``) and the naming levels
(``naming_level``) on *episodes that look like use*:

- ``use_episodes``: a sample of trained hands (all, half, a quarter) with
  their training paintings as gallery, their held-out (val) paintings as
  known queries, and artists never trained on (calib) as unknown ones;
- ``new_hand_episodes``: ``divisions`` of the calib artists alone (a
  quarter, half or three quarters known, the rest not);
- ``mixed_episodes``: both at once, the trained hands beside half of the
  calib artists (the default ``attribute --among all``): they fit the one
  number the others cannot, the offset between a trained and a new hand in
  p(a | known).

``divisions`` is the one known/unknown division of a set of artists; the
unseen-artist protocol of evaluation/attribution.py measures on it too.
Each part of the probabilities is fitted by maximum likelihood (Newton's
method: the logits are linear in the numbers). Known and unknown queries
weigh half each: p(unknown) assumes that half of the paintings asked about
are by none of the known hands.

The raw score (power 0, nearest, k 0) is always a candidate space, so the
chosen space is never worse than it on the episodes it is chosen on.
DEFAULT (square-root whitening and background, the blend of prototype and
nearest for trained hands, prototypes for new ones: the best on real
paintings) stays unless another candidate beats it by MARGIN and by SURE
standard errors of a bootstrap over the episodes' artists
(``clearly_better``): with a few calib artists the episodes' figures are
noisy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pbn_cli.answers.attribution import (AGGREGATES, BACKGROUND_K, KINDS, NAMED, PRECISION, AttributionModel,
                                         KnownHands, OpenSet, Paintings, Space, by_kind, hand_features, known_logit,
                                         open_set_probabilities, score_parts, scores, scoring_model, softmax, space,
                                         verdicts)
from pbn_cli.answers.metrics import weighted_auc

POWERS = (0.0, 0.25, 0.5)  # whitening exponents a collection's space is chosen from (0 = raw)
KS = (0, BACKGROUND_K)  # background sizes it is chosen from (0 = no background term)
# the best space on real paintings per kind of hand (docs/benchmarks.md): a trained hand's nearest paintings add to its
# prototype what the network learnt of it; a new hand's leave its probabilities less calibrated for no better answer
DEFAULT = {"trained": (0.25, "blend", BACKGROUND_K), "new": (0.25, "prototype", BACKGROUND_K)}
RAW = (0.0, "nearest", 0)  # the raw best score: the mean similarity to a hand's NEAREST closest paintings
MARGIN = 0.02  # of quality, by which a collection's episodes must favour another space over DEFAULT
SURE = 2.0  # ... and by this many standard errors of a bootstrap over their artists
DRAWS = 200  # bootstrap draws of the episodes' artists
DIVISIONS = 20  # seeded known/unknown divisions of a set of artists
FIT_DIVISIONS = 40  # ... of the calib artists the probabilities are fitted on: the divisions of a few artists are a
#                     sample, and with 20 the fit carried its noise (docs/benchmarks.md)
MAX_QUERIES = 1000  # known (and unknown) queries of a use episode: a seeded sample of larger sets


def divisions(artists, seed: int, n: int = DIVISIONS, share: float = 0.5):
    """Seeded divisions of a set of artists: per division (known artists' names, gallery rows, known query rows,
    unknown query rows), indices into ``artists``. The first ``share`` (rounded up) of the shuffled names are known;
    half of each known artist's paintings (rounded up) form the gallery, the rest are queries."""
    artists = np.asarray(artists, object).astype(str)
    names = np.unique(artists)
    for d in range(n):
        rng = np.random.default_rng([seed, d])
        known_names = names[rng.permutation(len(names))][: min(max(math.ceil(share * len(names)), 1), len(names) - 1)]
        g, q = [], []
        for name in known_names:
            rows = np.flatnonzero(artists == name)[rng.permutation((artists == name).sum())]
            half = math.ceil(len(rows) / 2)
            g += list(rows[:half])
            q += list(rows[half:])
        yield known_names, np.array(g, int), np.array(q, int), np.flatnonzero(~np.isin(artists, known_names))


@dataclass
class Episodes:
    """Queries answered in fitting episodes, with what the probabilities are fitted from.

    Per episode: the queries' scores among its hands, the hands' kinds and
    gallery sizes, each query's true hand (-1: unknown) and its weight.
    """

    s: list = field(default_factory=list)
    kinds: list = field(default_factory=list)
    counts: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    artists: list = field(default_factory=list)  # each query's painter (the unit a bootstrap draws)

    def add(self, s: np.ndarray, known: KnownHands, labels: np.ndarray, artists, weight: float = 1.0,
            per_hand: bool = False) -> None:
        """One episode's queries; known and unknown ones weigh half each, the episode ``weight`` in all;
        ``per_hand``: the known half shared equally by the hands asked about, not by their queries."""
        unknown = labels < 0
        share = np.full(len(labels), max((~unknown).sum(), 1), np.float64)
        if per_hand and (~unknown).any():
            hands, inverse, counts = np.unique(labels[~unknown], return_inverse=True, return_counts=True)
            share[~unknown] = len(hands) * counts[inverse]
        w = weight * np.where(unknown, 0.5 / max(unknown.sum(), 1), 0.5 / share)
        if not unknown.any() or unknown.all():
            w = np.full(len(labels), weight / max(len(labels), 1))
        self.s.append(s)
        self.kinds.append(known.kinds)
        self.counts.append(known.counts)
        self.labels.append(np.asarray(labels, int))
        self.weights.append(w)
        self.artists.append(np.asarray(artists).astype(str))

    def __len__(self) -> int:
        return sum(map(len, self.labels))

    def joined(self, other: Episodes) -> Episodes:
        return Episodes(**{name: getattr(self, name) + getattr(other, name) for name in self.__dataclass_fields__})

    def padded(self):
        """Every query's scores padded with -inf to the widest episode, with the hands' kinds and counts, the
        queries' labels and weights."""
        width = max(s.shape[1] for s in self.s)
        ends = np.cumsum([len(s) for s in self.s])

        def pad(x, value):
            out = np.full((int(ends[-1]), width), value, np.float64)
            for v, s, end in zip(x, self.s, ends):
                out[end - len(s):end, :v.shape[-1]] = v  # a hand's kind or count, or each query's scores
            return out

        return (pad(self.s, -np.inf), pad(self.kinds, 0).astype(int), pad(self.counts, 1), np.concatenate(self.labels),
                np.concatenate(self.weights))


def new_hand_episodes(att: AttributionModel, calib: Paintings, seed: int, ep: Episodes | None = None,
                      n: int = FIT_DIVISIONS, score=scores) -> Episodes:
    """Divisions of artists never trained on into known and unknown hands (the unseen-artist protocol's shape)."""
    ep = ep or Episodes()
    if len(np.unique(calib.artists)) < 2:
        return ep
    shares = (0.25, 0.5, 0.75)  # as many hands as a quarter, half, three quarters: how their number matters
    for share, (names, g, q, u) in [(share, d) for share in shares
                                    for d in divisions(calib.artists, seed + int(share * 100), n // len(shares), share)]:
        known = KnownHands.from_gallery(att, calib.emb[g], calib.artists[g], calib.ids[g])
        asked = np.r_[q, u]
        s = score(att, known, calib.emb[asked], calib.ids[asked])
        labels = np.r_[np.searchsorted(known.names, calib.artists[q]), np.full(len(u), -1)]
        ep.add(s, known, labels, calib.artists[asked], 1.0 / (n // len(shares) * len(shares)))
    return ep


def use_episodes(att: AttributionModel, gallery: Paintings, held_out: Paintings, unknown: Paintings, seed: int,
                 ep: Episodes | None = None, shares=(1.0, 0.5, 0.25), score=scores) -> Episodes:
    """Episodes shaped like use: a share of the trained hands (all, half, a quarter: the model learns how the
    number of hands matters) with their training paintings as gallery, their held-out paintings as known queries,
    and paintings by artists never trained on as unknown ones."""
    ep = ep or Episodes()
    names = np.unique(held_out.artists)
    if not len(names) or not len(gallery.emb):
        return ep
    for d, share in enumerate(shares):
        pick = np.random.default_rng([seed, 7, d]).permutation(names)[: max(1, round(share * len(names)))]
        g, q = gallery.of(pick), held_out.of(pick)
        if not len(g.emb) or not len(q.emb):
            continue
        known = KnownHands.from_gallery(att, g.emb, g.artists, g.ids)
        asked = Paintings.join([q, unknown])
        s = score(att, known, asked.emb, asked.ids)
        labels = np.r_[np.searchsorted(known.names, q.artists), np.full(len(unknown.emb), -1)]
        ep.add(s, known, labels, asked.artists, 1.0 / len(shares))
    return ep


def mixed_episodes(att: AttributionModel, gallery: Paintings, held_out: Paintings, calib: Paintings, seed: int,
                   n: int = DIVISIONS // 4, score=scores) -> Episodes:
    """Episodes of both kinds of hand at once, as `attribute` asks by default (every artist of the workspace a known
    hand): the trained hands with their training paintings, and ``divisions`` of the calib artists, half of them
    known with half of their paintings; queries: the trained hands' held-out paintings, the known calib artists'
    other paintings and the unknown calib artists' paintings. Only here does a trained hand compete with a new one,
    so only here is the offset between the kinds informed. The known half of the weight is shared equally by the
    hands asked about: a trained hand has a few held-out paintings, a calib one half of its own, and weighing them
    by their queries would fit that accident of the split as a preference for new hands."""
    ep = Episodes()
    if len(np.unique(calib.artists)) < 2 or not len(held_out.ids) or not len(gallery.ids):
        return ep
    for names, g, q, u in divisions(calib.artists, seed + 300, n):
        both = Paintings.join([gallery, calib.take(g)])
        known = KnownHands.from_gallery(att, both.emb, both.artists, both.ids)
        asked = Paintings.join([held_out, calib.take(q), calib.take(u)])
        s = score(att, known, asked.emb, asked.ids)
        labels = np.r_[np.searchsorted(known.names, asked.artists[:len(held_out.ids) + len(q)]), np.full(len(u), -1)]
        ep.add(s, known, labels, asked.artists, 1.0 / n, per_hand=True)
    return ep


def _newton(f: np.ndarray, valid: np.ndarray, cols: np.ndarray, w: np.ndarray, theta: np.ndarray,
            offset: np.ndarray | float = 0.0, ridge: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """Maximum (ridge-penalised) likelihood of a softmax whose logits are linear in theta (f: (R, K, J) features,
    cols: the true column). Concave: Newton's steps, each halved until the objective rises (a full step can
    overshoot without end where the episodes are nearly separable, as a small synthetic collection's are). A
    parameter no feature informs stays where it starts."""
    informed = np.abs(f[valid]).max(0) > 0 if valid.any() else np.zeros(len(theta), bool)
    r, w = np.arange(len(f)), w * len(w) / max(w.sum(), 1e-12)  # the ridge weighs against as many queries

    def objective(t: np.ndarray) -> tuple[float, np.ndarray]:
        logits = np.where(valid, f @ t + offset, -np.inf)
        top = np.max(logits, -1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        log_z = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
        return float(w @ (logits[r, cols] - log_z) - ridge / 2 * t @ t), softmax(logits)

    value, p = objective(theta)
    for _ in range(iterations):
        mean_f = np.einsum("rk,rkj->rj", p, f)
        grad = np.einsum("r,rj->j", w, f[r, cols] - mean_f) - ridge * theta
        centred = f - mean_f[:, None, :]
        hess = -np.einsum("r,rk,rkj,rki->ji", w, p, centred, centred) - ridge * np.eye(len(theta))
        hess[~informed], hess[:, ~informed] = 0, 0
        hess[~informed, ~informed] = -1
        step = np.linalg.solve(hess, -np.where(informed, grad, 0))
        for _ in range(40):  # halve until the objective does not fall
            new_value, new_p = objective(theta + step)
            if new_value >= value - 1e-12 * abs(value):
                break
            step = step / 2
        theta, value, p = theta + step, new_value, new_p
        if np.abs(step).max() < 1e-8:
            break
    return theta


def _null(s: np.ndarray, kinds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean and spread of the scores of hands that did not paint the query, for new then trained hands."""
    other = np.isfinite(s) & (np.arange(s.shape[1])[None, :] != labels[:, None])
    out = []
    for kind in (0, 1):
        v = s[other & (kinds == kind)]
        out += [float(v.mean()), float(max(v.std(), 1e-3))] if len(v) > 1 else [0.0, 1.0]
    return np.asarray(out)


def fit_open_set(ep: Episodes, mixed: Episodes | None = None) -> OpenSet | None:
    """p(a | known) on the known queries of the episodes and of ``mixed`` (``mixed_episodes``: they inform the
    offset between the kinds of hand), then p(known) on all queries of ``ep``, then the naming level."""
    if not len(ep) or not any(len(s) and s.shape[1] for s in ep.s):
        return None
    model = OpenSet()
    s, kinds, counts, labels, w = (ep.joined(mixed) if mixed is not None and len(mixed) else ep).padded()
    is_known = labels >= 0
    if is_known.any():
        f = hand_features(s, kinds, counts)[is_known]
        model.theta[:4] = _newton(f, np.isfinite(s[is_known]), labels[is_known], w[is_known], model.hand_weights)
    s, kinds, counts, labels, w = ep.padded()
    is_known = labels >= 0
    model.null = _null(s, kinds, labels)
    _, g, offset = known_logit(model, s, kinds, counts)
    f = np.stack([g, np.zeros_like(g)], 1)  # the sigmoid as a softmax over (known, unknown)
    model.theta[4:] = _newton(f, np.ones((len(g), 2), bool), np.where(is_known, 0, 1), w, np.zeros(g.shape[1]),
                              np.c_[offset, np.zeros(len(g))])
    model.name_at = naming_level(ep, model)
    return model


def naming_level(ep: Episodes, model: OpenSet, precision: float = PRECISION) -> np.ndarray:
    """Per kind of top hand (new, trained): the lowest p(top hand), from ``precision`` up, at which named answers
    were right ``precision`` of the time in the episodes (0.95 when none is). Calibrated probabilities make
    ``precision`` itself such a level; a level fitted below it (in the episodes the model was fitted on) named
    too much on artists it was not fitted on (docs/benchmarks.md)."""
    s, kinds, counts, labels, w = ep.padded()
    p, unknown = open_set_probabilities(model, s, kinds, counts)
    top = p.argmax(1)
    right, p_top, kind = top == labels, p.max(1), kinds[np.arange(len(s)), top]
    out = np.full(2, 0.95)
    for k in (0, 1):
        for level in np.round(np.arange(precision, 0.96, 0.05), 2):
            named = (verdicts(p_top, unknown, level) == NAMED) & (kind == k)
            if w[named].sum() > 0 and (w * right)[named].sum() / w[named].sum() >= precision:
                out[k] = level
                break
    return out


def _space_quality(ep: Episodes, draws: np.ndarray | None = None) -> np.ndarray:
    """Mean of top-1 (known queries, weighted as fitted) and the AUROC of the best score (known against unknown
    queries, each query once): (1,), or per row of ``draws`` (each artist's multiplicity in a bootstrap draw of the
    episodes' artists, ``_draws``), a query weighing as often as its artist was drawn."""
    s, _, _, labels, w = ep.padded()
    known = labels >= 0
    best = np.where(np.isfinite(s.max(1)), s.max(1), -1e9)
    right = s.argmax(1) == labels
    if draws is None:
        times = np.ones((1, len(w)))
    else:
        _, codes = np.unique(np.concatenate(ep.artists), return_inverse=True)
        times = draws[:, codes]
    out = []
    for m in times:
        wr = w * m
        top1 = float((wr * right)[known].sum() / wr[known].sum()) if wr[known].sum() > 0 else 0.0
        roc = weighted_auc(best, known, m)
        out.append(0.5 * (top1 + (roc if np.isfinite(roc) else 0.5)))
    return np.asarray(out)


def _draws(ep: Episodes, n: int = DRAWS) -> np.ndarray:
    """(n, artists) multiplicities of the episodes' artists in n seeded bootstrap draws (the unit that varies
    from one collection to the next is the painter, not the painting)."""
    m = len(np.unique(np.concatenate(ep.artists)))
    picks = np.random.default_rng(DRAWS).integers(m, size=(n, m))
    return np.stack([np.bincount(row, minlength=m) for row in picks]).astype(np.float64)


def choose_space(background: Paintings, make_episodes, kind: str, trained_artists) -> tuple[Space, dict]:
    """The space for one kind of hand, by its quality on ``make_episodes(att, score)`` (mean of top-1 and open-set
    AUROC), among every power, aggregate and background size (each whitening's four scored from one pass).
    DEFAULT, the best on real paintings (docs/benchmarks.md), stays unless the raw score beats it, or another is
    better by MARGIN and by SURE standard errors of a bootstrap over the episodes' artists (on four synthetic calib
    artists a space ahead by 0.036 was the worst on the test artists: the choice must not rest on which few
    painters the episodes hold); without episodes it stays too."""
    tried, quality, kept = {}, {}, {}  # kept: the scored episodes of DEFAULT and of the best so far (memory)
    for power in POWERS:
        if power and len(background.emb) < 2:
            continue
        base = space(background.emb, power, basis=background.basis)
        att = scoring_model(background.emb, background.artists, background.ids, trained_artists,
                            {other: Space(power, "prototype", BACKGROUND_K, base.mean, base.projection)
                             for other in KINDS})
        passes = []

        def record(att_, known, queries, q_ids):
            passes.append((known, score_parts(att_, known, queries, q_ids, every_space=True), len(queries)))
            return np.zeros((len(queries), len(known.names)))

        ep = make_episodes(att, record)
        if not len(ep):
            return _default_space(background, kind), {}
        for aggregate in AGGREGATES:
            for k in KS:
                scored = Episodes(**{**ep.__dict__, "s": [
                    by_kind(known, {kd: sims[aggregate] - (r if k else 0.0) for kd, (_, sims, r) in parts.items()}, n)
                    for known, parts, n in passes]})
                key, q = (power, aggregate, k), float(_space_quality(scored)[0])
                sp = Space(power, aggregate, k, base.mean, base.projection)
                tried[sp.describe()], quality[key] = round(q, 4), q
                if key == DEFAULT[kind]:
                    kept["default"] = (sp, scored)
                if "best" not in kept or q > quality[kept["best"][0]]:
                    kept["best"] = (key, sp, scored)
    _, best, best_ep = kept["best"]
    if "default" not in kept or quality[DEFAULT[kind]] < quality[RAW]:
        return best, tried
    default, default_ep = kept["default"]
    return (best if clearly_better(best_ep, default_ep) else default), tried


def clearly_better(ep: Episodes, than: Episodes) -> bool:
    """Whether the same episodes scored one way (``ep``) are better than scored another (``than``) by MARGIN of
    quality and by SURE standard errors of a bootstrap over their artists."""
    ahead = float(_space_quality(ep)[0] - _space_quality(than)[0])
    if ahead < MARGIN:
        return False
    draws = _draws(ep)
    return ahead >= SURE * float(np.nanstd(_space_quality(ep, draws) - _space_quality(than, draws)))


def _default_space(background: Paintings, kind: str) -> Space:
    power, aggregate, k = DEFAULT[kind] if len(background.emb) > 1 else RAW
    base = space(background.emb, power, basis=background.basis)
    return Space(power, aggregate, k, base.mean, base.projection)


def _sample(part: Paintings, seed: int, salt: int) -> Paintings:
    if len(part.ids) <= MAX_QUERIES:
        return part
    return part.take(np.sort(np.random.default_rng([seed, salt]).permutation(len(part.ids))[:MAX_QUERIES]))


def fit_attribution(background: Paintings, held_out: Paintings, calib: Paintings, seed: int,
                    trained_artists=None) -> AttributionModel:
    """The whole attribution model from a collection: each kind's space chosen on its episodes (trained hands:
    use episodes of ``held_out``, the training artists' val paintings; new hands: divisions of ``calib``, artists
    never trained on), then the probabilities fitted on both kinds of episode."""
    trained_artists = np.unique(background.artists if trained_artists is None else trained_artists)
    held_out, unknown = _sample(held_out.of(trained_artists), seed, 1), _sample(calib, seed, 2)

    def use(att: AttributionModel, score=scores) -> Episodes:
        return use_episodes(att, background, held_out, unknown, seed, score=score)

    def new(att: AttributionModel, score=scores) -> Episodes:
        return new_hand_episodes(att, calib, seed, score=score)

    chosen, tried = {}, {}
    for kind, make in (("trained", use), ("new", new)):
        chosen[kind], tried[kind] = choose_space(background, make, kind, trained_artists)
    att = scoring_model(background.emb, background.artists, background.ids, trained_artists, chosen)
    ep = new_hand_episodes(att, calib, seed, use(att))
    att.open_set = fit_open_set(ep, mixed_episodes(att, background, held_out, calib, seed))
    n_calib, n_val = len(np.unique(calib.artists)), len(np.unique(held_out.artists))
    att.fitted_on = {"whitening": f"{len(background.ids)} training paintings",
                     "probability": f"{n_val} trained hands' held-out paintings, {n_calib} calib artists" if att.open_set
                     else "none",
                     "spaces": {kind: sp.describe() for kind, sp in chosen.items()}, "tried": tried}
    return att
