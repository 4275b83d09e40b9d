"""Who painted this? Known hands ranked, a probability for each, and an honest "unknown hand": attribution's one home.

**Two kinds of hands.** A *trained* hand is an artist the network was
trained on (its held-out paintings sit close to its training paintings); a
*new* hand is one it never saw (calib, test, a collection added later). Each
kind is scored in its own space, chosen per collection (``choose_space``):

    z(x)       = normalise((x - mu) V / lambda^power)      power 0: the embedding itself, normalised (raw);
                                                            0.25: square-root whitening; 0.5: full whitening
    hand(q, a) = cos(z(q), prototype of a)                 aggregate "prototype": mean of a's paintings, normalised;
                 or the mean of cos to a's NEAREST closest  aggregate "nearest"
    r(q, not a) = mean of the k highest cos(z(q), z(t)) over the background's paintings by other hands
                 (training paintings; k = 0: none)
    s(q, a)    = hand(q, a) - r(q, not a)

The raw score (power 0, nearest, k 0) is always a candidate, so the chosen
space is never worse than it on the episodes it is chosen on. DEFAULT
(square-root whitening, prototype, background: the best on real paintings)
stays unless another candidate beats it by MARGIN: with a few calib artists
the episodes' figures are noisy.

**Probabilities** (``OpenSet``), in two parts:

    p(a | a known hand painted it) = softmax over hands of  beta[kind of a] s(q, a) + offset [a trained]
                                                             + per_painting log(n_a)
    p(a known hand painted it)     = sigmoid(slope[kind of top] s(q, top) + offset' [top trained]
                                             + per_hand log(A) + bias)
    p(a) = p(known) p(a | known),   p(unknown hand) = 1 - p(known)

with n_a the hand's gallery paintings, A the number of hands and "top" the
most likely hand. Whether the painting is by a known hand rests on how well
its best hand fits it; log(A) lets the best of many unrelated hands fit by
chance better than the best of a few. Each part is fitted by maximum
likelihood (Newton's method: the logits are linear in the numbers) on
*episodes that look like use* (``use_episodes``): a sample of trained hands
(all, half, a quarter) with their training paintings as gallery, their
held-out (val) paintings as known queries, and artists never trained on
(calib) as unknown ones; and on divisions of the calib artists alone (half
known, half not: ``new_hand_episodes``). Known and unknown queries weigh
half each: p(unknown) assumes that half of the paintings asked about are by
none of the known hands.

**The answer** (``answer``): "unknown hand" when p(unknown) is at least
p(top hand); the hand's name when p(top hand) reaches ``name_at``, the
lowest level from ``PRECISION`` up at which named answers were right
``PRECISION`` of the time on the fitting episodes (one level for a trained
top hand, one for a new one); below that, "probably <hand>, uncertain".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from pbn_cli.core.atomic import atomic_path

COMPONENTS = 512
BACKGROUND_K = 20
BACKGROUND_MAX = 4096  # training paintings the whitening is fitted on and the background holds (seeded sample)
NEAREST = 3  # paintings the "nearest" aggregate averages
POWERS = (0.0, 0.25, 0.5)  # whitening exponents a collection's space is chosen from (0 = raw)
KS = (0, BACKGROUND_K)  # background sizes it is chosen from (0 = no background term)
AGGREGATES = ("prototype", "nearest")
DEFAULT = (0.25, "prototype", BACKGROUND_K)  # the best space on real paintings (docs/benchmarks.md)
RAW = (0.0, "nearest", 0)  # the raw best score: the mean similarity to a hand's NEAREST closest paintings
MARGIN = 0.02  # of quality, by which a collection's episodes must favour another space over DEFAULT
PRECISION = 0.8  # named answers are right at least this often on the fitting episodes
DIVISIONS = 20  # seeded known/unknown divisions of a set of artists
KINDS = ("new", "trained")
UNKNOWN, NAMED, PROBABLY = "unknown hand", "named", "probably"


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Space:
    """One way of scoring hands: a whitening (``power``), an aggregate over a hand's paintings, a background."""

    power: float
    aggregate: str
    k: int
    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (D, C)

    def whiten(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        return normalise(x) if self.power == 0 else normalise((x - self.mean) @ self.projection)

    def describe(self) -> str:
        whitening = "raw" if self.power == 0 else f"whitened (power {self.power:g}, {self.projection.shape[1]} comps)"
        return f"{whitening}, {self.aggregate}, background k={self.k}"


@dataclass
class OpenSet:
    """The probability model: its numbers (p(a | known): 4, then p(known): 5; the docstring's order), the null
    distribution of a hand's score for a painting not by it (mean and spread, new then trained), and the level
    from which an answer is named."""

    theta: np.ndarray = field(default_factory=lambda: np.r_[10.0, 10.0, 0, 0, 0, 0, 0, 0, 0])
    null: np.ndarray = field(default_factory=lambda: np.r_[0.0, 1.0, 0.0, 1.0])
    name_at: np.ndarray = field(default_factory=lambda: np.r_[PRECISION, PRECISION])  # new, trained top hand

    @property
    def hand(self) -> np.ndarray:
        return self.theta[:4]

    @property
    def known(self) -> np.ndarray:
        return self.theta[4:]

    def to_array(self) -> np.ndarray:
        return np.r_[self.theta, self.null, self.name_at]

    @classmethod
    def from_array(cls, a) -> OpenSet:
        a = np.asarray(a, np.float64)
        return cls(a[:9].copy(), a[9:13].copy(), a[13:15].copy())


@dataclass
class Attributor:
    """What scores a query against known hands: one space per kind of hand, the background, the probabilities."""

    spaces: dict  # kind -> Space
    background: np.ndarray  # (B, D) raw embeddings of training paintings
    background_artists: np.ndarray  # (B,)
    background_ids: np.ndarray  # (B,) image ids, so that a painting is never its own background
    trained_artists: np.ndarray  # names of the hands the network was trained on
    open_set: OpenSet | None = None
    fitted_on: dict = field(default_factory=dict)
    _whitened: dict = field(default_factory=dict, repr=False, compare=False)  # id(space) -> (space, background)

    def whitened_background(self, sp: Space) -> np.ndarray:
        """The background in ``sp``, whitened once per space."""
        if id(sp) not in self._whitened:
            self._whitened[id(sp)] = (sp, sp.whiten(self.background))
        return self._whitened[id(sp)][1]

    def kinds(self, names) -> np.ndarray:
        """1 for a trained hand, 0 for a new one."""
        return np.isin(np.asarray(names).astype(str), self.trained_artists).astype(int)

    def to_state(self) -> dict:
        """Plain arrays (numbers and text): an .npz file beside the run, or tensors in an exported model."""
        state = {"background": self.background, "background_artists": self.background_artists.astype(str),
                 "background_ids": self.background_ids.astype(str), "trained_artists": self.trained_artists.astype(str),
                 "open_set": self.open_set.to_array() if self.open_set else np.zeros(0),
                 "fitted_on": np.asarray(json.dumps(self.fitted_on))}
        for kind, sp in self.spaces.items():
            state[f"{kind}_mean"], state[f"{kind}_projection"] = sp.mean, sp.projection
            state[f"{kind}_space"] = np.asarray(json.dumps({"power": sp.power, "aggregate": sp.aggregate, "k": sp.k}))
        return state

    @classmethod
    def from_state(cls, d) -> Attributor:
        spaces = {}
        for kind in KINDS:
            if f"{kind}_space" in d:
                meta = json.loads(str(d[f"{kind}_space"]))
                spaces[kind] = Space(float(meta["power"]), meta["aggregate"], int(meta["k"]),
                                     np.asarray(d[f"{kind}_mean"], np.float32),
                                     np.asarray(d[f"{kind}_projection"], np.float32))
        o = np.asarray(d["open_set"], np.float64)
        return cls(spaces, np.asarray(d["background"], np.float32), np.asarray(d["background_artists"]).astype(str),
                   np.asarray(d["background_ids"]).astype(str), np.asarray(d["trained_artists"]).astype(str),
                   OpenSet.from_array(o) if len(o) else None, json.loads(str(d["fitted_on"])))


def save_attributor(path: Path, att: Attributor) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **att.to_state())


def load_attributor(path: Path) -> Attributor | None:
    """The attribution model of a run, or None for one written by an older pbn (`pbn eval` writes it anew)."""
    with np.load(path, allow_pickle=False) as d:
        return Attributor.from_state({k: d[k] for k in d.files}) if "trained_artists" in d.files else None


def principal(emb: np.ndarray, components: int = COMPONENTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean, principal directions and variances of ``emb`` (at most ``components``, none of negligible
    variance): what every whitening of it is made from."""
    x = np.asarray(emb, np.float64)
    mean = x.mean(0)
    if len(x) < 2:
        return mean, np.zeros((0, x.shape[1])), np.zeros(0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    lam = sv**2 / max(len(x) - 1, 1)
    keep = min(components, int((lam > lam[0] * 1e-8).sum()))
    return mean, vt[:keep], lam[:keep]


def space(emb: np.ndarray, power: float, aggregate: str = "prototype", k: int = BACKGROUND_K,
          components: int = COMPONENTS, basis: tuple | None = None) -> Space:
    """The whitening of ``power`` from a PCA of ``emb`` (training paintings; ``basis``: ``principal(emb)`` when
    already computed)."""
    mean, vt, lam = basis if basis is not None else (np.asarray(emb, np.float64).mean(0), None, None)
    if power == 0:
        return Space(0.0, aggregate, k, mean.astype(np.float32), np.zeros((len(mean), 0), np.float32))
    if vt is None:
        mean, vt, lam = principal(emb, components)
    return Space(float(power), aggregate, k, mean.astype(np.float32), (vt.T / lam**power).astype(np.float32))


def fit(emb: np.ndarray, artists, ids, trained_artists=None, spaces: dict | None = None) -> Attributor:
    """An attributor over the background ``emb`` (training paintings), by default square-root whitened prototypes
    with a background term for every kind of hand; ``choose_space`` picks per collection."""
    default = space(emb, 0.25) if len(emb) > 1 else space(emb, 0.0)
    return Attributor(spaces or {kind: default for kind in KINDS}, np.asarray(emb, np.float32),
                      np.asarray(artists).astype(str), np.asarray(ids).astype(str),
                      np.unique(np.asarray(artists if trained_artists is None else trained_artists).astype(str)))


@dataclass
class KnownHands:
    """The known hands: their names, kinds and gallery paintings, and per space the paintings whitened, each
    hand's sum (for prototypes, one painting left out at will) and the pool of other paintings r is measured on."""

    names: np.ndarray
    kinds: np.ndarray  # 1 trained, 0 new
    ids: np.ndarray  # gallery paintings
    codes: np.ndarray  # hand of each gallery painting, into names
    counts: np.ndarray
    pool_artists: np.ndarray
    pool_ids: np.ndarray
    z: dict = field(default_factory=dict)  # kind -> whitened gallery
    sums: dict = field(default_factory=dict)
    pool: dict = field(default_factory=dict)


def known(att: Attributor, emb: np.ndarray, artists, ids) -> KnownHands:
    """The hands of a gallery (raw embeddings ``emb`` of their paintings), ready to be scored against. r is
    measured on the background alone, so that a hand's score does not depend on how many others the gallery holds."""
    artists, ids = np.asarray(artists).astype(str), np.asarray(ids).astype(str)
    names, codes = np.unique(artists, return_inverse=True)
    hands = KnownHands(names, att.kinds(names), ids, codes, np.bincount(codes, minlength=len(names)),
                       att.background_artists, att.background_ids)
    for kind in set(KINDS[i] for i in np.unique(hands.kinds)):
        sp = att.spaces[kind]
        z = sp.whiten(emb)
        hands.z[kind], hands.pool[kind] = z, att.whitened_background(sp)
        hands.sums[kind] = (codes[None, :] == np.arange(len(names))[:, None]).astype(np.float64) @ z
    return hands


def _background_term(sims: np.ndarray, pool_artists: np.ndarray, names: np.ndarray, k: int) -> np.ndarray:
    """(Q, A) r(q, not a): the mean of the k highest similarities to paintings not by a (-inf: left out)."""
    out = np.zeros((len(sims), len(names)))
    if k == 0:
        return out
    take = min(sims.shape[1], k + 64)  # enough to replace one hand's paintings among the k nearest
    near = np.argsort(-sims, axis=1)[:, :take]
    for i, row in enumerate(near):
        s, who = sims[i, row], pool_artists[row]
        finite = np.isfinite(s)
        out[i] = s[finite][:k].mean() if finite.any() else 0.0
        for j in np.flatnonzero(np.isin(names, who[:k])):  # only a hand among the k nearest changes r
            others = s[(who != names[j]) & finite][:k]
            out[i, j] = others.mean() if len(others) else 0.0
    return out


def _hand_similarity(hands: KnownHands, kind: str, sp: Space, zq: np.ndarray, itself: np.ndarray) -> np.ndarray:
    """(Q, A) cos to each hand's prototype, or the mean of its NEAREST closest paintings; -inf for a hand left
    with no painting once the query's own painting is set aside (``itself``: query x gallery)."""
    z = hands.z[kind]
    if sp.aggregate == "nearest":
        sims = np.where(itself, -np.inf, zq @ z.T)
        out = np.full((len(zq), len(hands.names)), -np.inf)
        for a in range(len(hands.names)):
            top = -np.sort(-sims[:, hands.codes == a], axis=1)[:, :NEAREST]
            with np.errstate(invalid="ignore"):
                out[:, a] = np.where(np.isfinite(top).any(1), np.where(np.isfinite(top), top, 0).sum(1)
                                     / np.maximum(np.isfinite(top).sum(1), 1), -np.inf)
        return out
    sums = hands.sums[kind]
    cos = zq @ normalise(sums).T
    cos[:, hands.counts == 0] = -np.inf
    for q, g in zip(*np.nonzero(itself)):  # the query itself is a gallery painting: left out of its hand
        a = hands.codes[g]
        cos[q, a] = normalise(sums[a] - z[g]) @ zq[q] if hands.counts[a] > 1 else -np.inf
    return cos


def _per_kind(att: Attributor, hands: KnownHands, queries: np.ndarray, q_ids):
    """For each kind of hand in the gallery: its space, the queries whitened in it, their similarities to the
    background (a query's own painting at -inf), and which gallery paintings are the queries themselves."""
    q_ids = np.asarray(q_ids).astype(str)
    itself = hands.ids[None, :] == q_ids[:, None]
    for kind in hands.z:
        sp = att.spaces[kind]
        zq = sp.whiten(queries)
        sims = zq @ hands.pool[kind].T
        sims[hands.pool_ids[None, :] == q_ids[:, None]] = -np.inf
        yield kind, sp, zq, sims, itself


def _by_kind(hands: KnownHands, per_kind: dict, n: int) -> np.ndarray:
    """(Q, A): each hand's column from the scores of its kind."""
    out = np.full((n, len(hands.names)), -np.inf)
    for kind, s in per_kind.items():
        mine = hands.kinds == KINDS.index(kind)
        out[:, mine] = s[:, mine]
    return out


def scores(att: Attributor, hands: KnownHands, queries: np.ndarray, q_ids) -> np.ndarray:
    """(Q, A): s(q, a) for raw query embeddings, each hand in its kind's space; a query that is a gallery painting
    is left out of its hand and of r."""
    return _by_kind(hands, {kind: _hand_similarity(hands, kind, sp, zq, itself)
                            - _background_term(sims, hands.pool_artists, hands.names, sp.k)
                            for kind, sp, zq, sims, itself in _per_kind(att, hands, queries, q_ids)}, len(queries))


def _components(att: Attributor, hands: KnownHands, queries: np.ndarray, q_ids) -> dict:
    """Per kind: the hand similarity under every aggregate, and r with BACKGROUND_K: every space of one whitening
    from one pass (``choose_space``)."""
    return {kind: ({a: _hand_similarity(hands, kind, Space(sp.power, a, sp.k, sp.mean, sp.projection), zq, itself)
                    for a in AGGREGATES}, _background_term(sims, hands.pool_artists, hands.names, BACKGROUND_K))
            for kind, sp, zq, sims, itself in _per_kind(att, hands, queries, q_ids)}


def _hand_features(s: np.ndarray, kinds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(Q, A, 4): a hand's logit's features (HAND's order)."""
    sv = np.where(np.isfinite(s), s, 0.0)
    trained = np.broadcast_to(kinds == 1, s.shape)
    return np.stack([sv * ~trained, sv * trained, trained, np.broadcast_to(np.log(np.maximum(counts, 1)), s.shape)], -1)


def _log_tail(z: np.ndarray) -> np.ndarray:
    """log P(N(0, 1) > z), accurate far into the tail."""
    z = np.asarray(z, np.float64)
    out = np.empty_like(z)
    near = z < 5
    out[near] = np.log(np.maximum(0.5 * np.vectorize(math.erfc, otypes=[float])(z[near] / math.sqrt(2)), 1e-300))
    far = z[~near]
    out[~near] = -0.5 * far**2 - np.log(far * math.sqrt(2 * math.pi)) + np.log1p(-1 / far**2)
    return out


def _known_features(s: np.ndarray, kinds: np.ndarray, top: np.ndarray, null: np.ndarray) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """(Q, 4) features of "one of the known hands painted it" (the docstring's order) and (Q,) its fixed offset.

    For an unknown painting, the top score is the best of A hands' chance scores; for a known one, mostly its own
    hand's. Bayes' rule then gives log odds = log f1(s) - log f0(s) - log A + (A - 1) P(chance > s) (to first
    order): a quadratic in the top score z (in units of the null, the chance scores' distribution, of its kind)
    beside the expected number of hands scoring above it by chance, and -log A as a fixed offset, so that the
    number of hands is extrapolated by law, not by fit."""
    q = np.arange(len(s))
    best, trained = s[q, top], np.broadcast_to(kinds, s.shape)[q, top] == 1
    mean, spread = np.where(trained, null[2], null[0]), np.where(trained, null[3], null[1])
    z = np.where(np.isfinite(best), (best - mean) / np.maximum(spread, 1e-6), 0.0)
    n_hands = np.maximum(np.isfinite(s).sum(1), 1)
    chance = np.log(n_hands) + _log_tail(z)
    return np.stack([z, chance, chance * trained, trained, np.ones(len(s))], -1), np.zeros(len(s))


def _softmax(logits: np.ndarray) -> np.ndarray:
    top = np.max(logits, -1, keepdims=True)
    e = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
    return e / e.sum(-1, keepdims=True)


def _hand_p(theta: np.ndarray, s: np.ndarray, kinds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(Q, A) p(hand a | one of the known hands painted it)."""
    return _softmax(np.where(np.isfinite(s), _hand_features(s, kinds, counts) @ theta, -np.inf))


def _open_set_p(model: OpenSet, s: np.ndarray, kinds: np.ndarray, counts: np.ndarray):
    closed = _hand_p(model.hand, s, kinds, counts)
    g, offset = _known_features(s, kinds, closed.argmax(1), model.null)
    known = 1 / (1 + np.exp(-np.clip(g @ model.known + offset, -50, 50)))
    return closed * known[:, None], 1 - known


def probabilities(att: Attributor, hands: KnownHands, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, A) p(by hand a) and (Q,) p(by a hand not known), from the scores: p(a) = p(known) p(a | known)."""
    if att.open_set is None or not s.shape[1]:  # no probability model (eval found no artists to fit it on)
        return np.full(s.shape, np.nan), np.full(len(s), np.nan)
    return _open_set_p(att.open_set, s, hands.kinds, hands.counts)


@dataclass
class Episodes:
    """Queries answered in fitting episodes: their scores among the episode's hands, the hands' kinds and gallery
    sizes, the true hand (-1: unknown), and each query's weight."""

    s: list = field(default_factory=list)
    kinds: list = field(default_factory=list)
    counts: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    weights: list = field(default_factory=list)

    def add(self, s: np.ndarray, hands: KnownHands, labels: np.ndarray, weight: float = 1.0) -> None:
        """One episode's queries; known and unknown ones weigh half each, the episode ``weight`` in all."""
        unknown = labels < 0
        w = weight * np.where(unknown, 0.5 / max(unknown.sum(), 1), 0.5 / max((~unknown).sum(), 1))
        if not unknown.any() or unknown.all():
            w = np.full(len(labels), weight / max(len(labels), 1))
        self.s.append(s)
        self.kinds.append(hands.kinds)
        self.counts.append(hands.counts)
        self.labels.append(np.asarray(labels, int))
        self.weights.append(w)

    def __len__(self) -> int:
        return sum(map(len, self.labels))


def _newton(f: np.ndarray, valid: np.ndarray, cols: np.ndarray, w: np.ndarray, theta: np.ndarray,
            offset: np.ndarray | float = 0.0, ridge: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """Maximum likelihood of a softmax whose logits are linear in theta (f: (R, K, J) features, cols: the true
    column); concave, so Newton's method converges. A parameter no feature informs stays where it starts."""
    informed = np.abs(f[valid]).max(0) > 0 if valid.any() else np.zeros(len(theta), bool)
    r, w = np.arange(len(f)), w * len(w) / max(w.sum(), 1e-12)  # the ridge weighs against as many queries
    for _ in range(iterations):
        p = _softmax(np.where(valid, f @ theta + offset, -np.inf))
        mean_f = np.einsum("rk,rkj->rj", p, f)
        grad = np.einsum("r,rj->j", w, f[r, cols] - mean_f) - ridge * theta
        centred = f - mean_f[:, None, :]
        hess = -np.einsum("r,rk,rkj,rki->ji", w, p, centred, centred) - ridge * np.eye(len(theta))
        hess[~informed], hess[:, ~informed] = 0, 0
        hess[~informed, ~informed] = -1
        step = np.linalg.solve(hess, -np.where(informed, grad, 0))
        theta = theta + step
        if np.abs(step).max() < 1e-8:
            break
    return theta


def _padded(ep: Episodes):
    """Every episode query's scores padded with -inf to the widest episode, with the hands' kinds and counts."""
    width = max(s.shape[1] for s in ep.s)

    def pad(x, value):
        return np.concatenate([np.pad(np.broadcast_to(v, (len(s), v.shape[-1])).astype(float),
                                      ((0, 0), (0, width - v.shape[-1])), constant_values=value)
                               for v, s in zip(x, ep.s)])

    return (pad(ep.s, -np.inf), pad(ep.kinds, 0).astype(int), pad(ep.counts, 1), np.concatenate(ep.labels),
            np.concatenate(ep.weights))


def _null(s: np.ndarray, kinds: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean and spread of the scores of hands that did not paint the query, for new then trained hands."""
    other = np.isfinite(s) & (np.arange(s.shape[1])[None, :] != labels[:, None])
    out = []
    for kind in (0, 1):
        v = s[other & (kinds == kind)]
        out += [float(v.mean()), float(max(v.std(), 1e-3))] if len(v) > 1 else [0.0, 1.0]
    return np.asarray(out)


def fit_open_set(ep: Episodes) -> OpenSet | None:
    """p(a | known) on the episodes' known queries, then p(known) on all of them, then the naming level."""
    if not len(ep) or not any(len(s) and s.shape[1] for s in ep.s):
        return None
    s, kinds, counts, labels, w = _padded(ep)
    model = OpenSet()
    known = labels >= 0
    if known.any():
        f = _hand_features(s, kinds, counts)[known]
        model.theta[:4] = _newton(f, np.isfinite(s[known]), labels[known], w[known], model.hand)
    model.null = _null(s, kinds, labels)
    top = _hand_p(model.hand, s, kinds, counts).argmax(1)
    g, offset = _known_features(s, kinds, top, model.null)
    f = np.stack([g, np.zeros_like(g)], 1)
    model.theta[4:] = _newton(f, np.ones((len(g), 2), bool), np.where(known, 0, 1), w, np.zeros(5),
                              np.c_[offset, np.zeros(len(g))])
    model.name_at = naming_level(ep, model)
    return model


def _episode_answers(ep: Episodes, model: OpenSet):
    """Per episode query: top hand right, p(top hand), p(unknown), weight, the top hand's kind."""
    s, kinds, counts, labels, w = _padded(ep)
    p, unknown = _open_set_p(model, s, kinds, counts)
    top = p.argmax(1)
    return top == labels, p.max(1), unknown, w, kinds[np.arange(len(s)), top]


def naming_level(ep: Episodes, model: OpenSet, precision: float = PRECISION) -> np.ndarray:
    """Per kind of top hand (new, trained): the lowest p(top hand), from ``precision`` up, at which named answers
    were right ``precision`` of the time in the episodes (0.95 when none is). Calibrated probabilities make
    ``precision`` itself such a level; a level fitted below it (in the episodes the model was fitted on) named
    too much on artists it was not fitted on (docs/benchmarks.md)."""
    right, top, unknown, w, kind = _episode_answers(ep, model)
    out = np.full(2, 0.95)
    for k in (0, 1):
        for level in np.round(np.arange(precision, 0.96, 0.05), 2):
            named = (top > unknown) & (top >= level) & (kind == k)
            if w[named].sum() > 0 and (w * right)[named].sum() / w[named].sum() >= precision:
                out[k] = level
                break
    return out


def answer(p_top: float, p_unknown: float, name_at: float) -> str:
    """The three-way rule: UNKNOWN when p(unknown) is at least p(top hand), NAMED from ``name_at``, else PROBABLY."""
    if not np.isfinite(p_top) or p_unknown >= p_top:
        return UNKNOWN
    return NAMED if p_top >= name_at else PROBABLY


def divisions(artists, seed: int, n: int = DIVISIONS, share: float = 0.5):
    """Seeded divisions of a set of artists: per division (known artists' names, gallery rows, known query rows,
    unknown query rows), indices into ``artists``. The first half (rounded up) of the shuffled names are known;
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
class Split:
    """Raw embeddings of some paintings, with their artists and ids."""

    emb: np.ndarray
    artists: np.ndarray
    ids: np.ndarray

    def __post_init__(self):
        self.emb = np.asarray(self.emb, np.float32)
        self.artists, self.ids = np.asarray(self.artists).astype(str), np.asarray(self.ids).astype(str)

    @cached_property
    def basis(self) -> tuple:
        """``principal(emb)``, computed once for every whitening of these paintings."""
        return principal(self.emb)

    def take(self, rows) -> Split:
        return Split(self.emb[rows], self.artists[rows], self.ids[rows])

    def of(self, names) -> Split:
        return self.take(np.isin(self.artists, names))


def new_hand_episodes(att: Attributor, calib: Split, seed: int, ep: Episodes | None = None,
                      n: int = DIVISIONS, score=scores) -> Episodes:
    """Divisions of artists never trained on into known and unknown hands (the unseen-artist protocol's shape)."""
    ep = ep or Episodes()
    if len(np.unique(calib.artists)) < 2:
        return ep
    shares = (0.25, 0.5, 0.75)  # as many hands as a quarter, half, three quarters: how their number matters
    for share, (names, g, q, u) in [(share, d) for share in shares
                                    for d in divisions(calib.artists, seed + int(share * 100), n // len(shares), share)]:
        hands = known(att, calib.emb[g], calib.artists[g], calib.ids[g])
        asked = np.r_[q, u]
        s = score(att, hands, calib.emb[asked], calib.ids[asked])
        labels = np.r_[np.searchsorted(hands.names, calib.artists[q]), np.full(len(u), -1)]
        ep.add(s, hands, labels, 1.0 / (n // len(shares) * len(shares)))
    return ep


def use_episodes(att: Attributor, gallery: Split, held_out: Split, unknown: Split, seed: int,
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
        hands = known(att, g.emb, g.artists, g.ids)
        asked = Split(np.r_[q.emb, unknown.emb], np.r_[q.artists, unknown.artists], np.r_[q.ids, unknown.ids])
        s = score(att, hands, asked.emb, asked.ids)
        labels = np.r_[np.searchsorted(hands.names, q.artists), np.full(len(unknown.emb), -1)]
        ep.add(s, hands, labels, 1.0 / len(shares))
    return ep


def _space_quality(ep: Episodes) -> float:
    """Mean of top-1 (known queries) and the AUROC of the best score (known against unknown queries)."""
    from pbn_cli.model.metrics import auc

    s, _, _, labels, w = _padded(ep)
    known_ = labels >= 0
    best = np.where(np.isfinite(s.max(1)), s.max(1), -1e9)
    top1 = float((w * (s.argmax(1) == labels))[known_].sum() / w[known_].sum()) if known_.any() else 0.0
    roc = auc(best, known_) if known_.any() and (~known_).any() else 0.5
    return 0.5 * (top1 + (roc if np.isfinite(roc) else 0.5))


def choose_space(background: Split, make_episodes, kind: str, trained_artists) -> tuple[Space, dict]:
    """The space for one kind of hand, by its quality on ``make_episodes(att, score)`` (mean of top-1 and open-set
    AUROC), among every power, aggregate and background size (each whitening's four scored from one pass).
    DEFAULT, the best on real paintings (docs/benchmarks.md), stays unless another is better by MARGIN (a few
    calib artists make the figure noisy) or the raw score beats it; without episodes it stays too."""
    tried, candidates = {}, []
    for power in POWERS:
        if power and len(background.emb) < 2:
            continue
        base = space(background.emb, power, basis=background.basis)
        att = Attributor({other: Space(power, "prototype", BACKGROUND_K, base.mean, base.projection) for other in KINDS},
                         background.emb, background.artists, background.ids,
                         np.unique(np.asarray(trained_artists).astype(str)))
        passes = []

        def record(att_, hands, queries, q_ids):
            passes.append((hands, _components(att_, hands, queries, q_ids), len(queries)))
            return np.zeros((len(queries), len(hands.names)))

        ep = make_episodes(att, record)
        if not len(ep):
            return _default_space(background), {}
        for aggregate in AGGREGATES:
            for k in KS:
                ep.s = [_by_kind(hands, {kd: sims[aggregate] - (r if k else 0.0) for kd, (sims, r) in parts.items()}, n)
                        for hands, parts, n in passes]
                q = _space_quality(ep)
                sp = Space(power, aggregate, k, base.mean, base.projection)
                tried[sp.describe()] = round(q, 4)
                candidates.append((q, (power, aggregate, k), sp))
    by_key = {key: (q, sp) for q, key, sp in candidates}
    best_q, _, best = max(candidates, key=lambda c: c[0])
    if DEFAULT in by_key:
        default_q, default = by_key[DEFAULT]
        if best_q - default_q < MARGIN and default_q >= by_key[RAW][0]:
            return default, tried
    return best, tried


def _default_space(background: Split) -> Space:
    power, aggregate, k = DEFAULT if len(background.emb) > 1 else RAW
    base = space(background.emb, power, basis=background.basis)
    return Space(power, aggregate, k, base.mean, base.projection)


@dataclass
class Ranking:
    """One query's hands, most likely first, how likely it is that none of them painted it, and the answer."""

    artists: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    unknown_probability: float
    answer: str  # UNKNOWN, NAMED or PROBABLY
    name_at: float  # the naming level of the top hand's kind

    @property
    def unknown(self) -> bool:
        return self.answer == UNKNOWN


def rank(att: Attributor, hands: KnownHands, query: np.ndarray, query_id: str = "") -> Ranking:
    """One query's hands ranked by probability (score within a kind), with the three-way answer."""
    s = scores(att, hands, np.atleast_2d(query), [query_id])
    p, unknown = probabilities(att, hands, s)
    key = np.where(np.isfinite(p[0]), p[0], s[0])
    order = np.lexsort((-s[0], -key))
    order = order[np.isfinite(s[0][order])]
    top = float(p[0][order[0]]) if len(order) else float("nan")
    name_at = float(att.open_set.name_at[hands.kinds[order[0]]]) if att.open_set and len(order) else PRECISION
    return Ranking(hands.names[order], s[0][order], p[0][order], float(unknown[0]),
                   answer(top, float(unknown[0]), name_at) if att.open_set else UNKNOWN, name_at)


MAX_QUERIES = 1000  # known (and unknown) queries of a use episode: a seeded sample of larger sets


def _sample(part: Split, seed: int, salt: int) -> Split:
    if len(part.ids) <= MAX_QUERIES:
        return part
    return part.take(np.sort(np.random.default_rng([seed, salt]).permutation(len(part.ids))[:MAX_QUERIES]))


def fit_attributor(background: Split, held_out: Split, calib: Split, seed: int, trained_artists=None) -> Attributor:
    """The whole attribution model from a collection: each kind's space chosen on its episodes (trained hands:
    use episodes of ``held_out``, the training artists' val paintings; new hands: divisions of ``calib``, artists
    never trained on), then the probabilities fitted on both kinds of episode."""
    trained_artists = np.unique(background.artists if trained_artists is None else trained_artists)
    held_out, unknown = _sample(held_out.of(trained_artists), seed, 1), _sample(calib, seed, 2)

    def use(att: Attributor, score=scores) -> Episodes:
        return use_episodes(att, background, held_out, unknown, seed, score=score)

    def new(att: Attributor, score=scores) -> Episodes:
        return new_hand_episodes(att, calib, seed, score=score)

    chosen, tried = {}, {}
    for kind, make in (("trained", use), ("new", new)):
        chosen[kind], tried[kind] = choose_space(background, make, kind, trained_artists)
    att = Attributor(chosen, background.emb, background.artists, background.ids, trained_artists)
    ep = new_hand_episodes(att, calib, seed, use(att))
    att.open_set = fit_open_set(ep)
    n_calib, n_val = len(np.unique(calib.artists)), len(np.unique(held_out.artists))
    att.fitted_on = {"whitening": f"{len(background.ids)} training paintings",
                     "probability": f"{n_val} trained hands' held-out paintings, {n_calib} calib artists" if att.open_set
                     else "none",
                     "spaces": {kind: sp.describe() for kind, sp in chosen.items()}, "tried": tried}
    return att
