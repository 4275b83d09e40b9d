"""Who painted this? Known hands ranked, a probability for each, and an honest "unknown hand": attribution's one home.

This module scores and answers; ``attribution_fitting`` fits what it uses
(the choice of space, the probabilities' numbers, the naming levels) on
episodes, divisions of artists into known and unknown hands.

**Two kinds of hands.** A *trained* hand is an artist the network was
trained on (its held-out paintings sit close to its training paintings); a
*new* hand is one it never saw (calib, test, a collection added later). Each
kind is scored in its own space, chosen per collection
(``attribution_fitting.choose_space``):

    z(x)       = normalise((x - mu) V / lambda^power)      power 0: the embedding itself, normalised (raw);
                                                            0.25: square-root whitening; 0.5: full whitening
    hand(q, a) = cos(z(q), prototype of a)                 aggregate "prototype": mean of a's paintings, normalised;
                 or the mean of cos to a's NEAREST closest  aggregate "nearest";
                 or the mean of those two                   aggregate "blend" (a hand's typical manner and
                                                            the paintings of it closest to the query)
    r(q, not a) = mean of the k highest cos(z(q), z(t)) over the background's paintings by other hands
                 (training paintings; k = 0: none)
    s(q, a)    = hand(q, a) - r(q, not a)

**Probabilities** (``OpenSet``), in two parts, both logits linear in their
numbers (``hand_features``, ``known_logit``: built once, for use and for
fitting alike):

    p(a | a known hand painted it) = softmax over hands of  beta[kind of a] s(q, a) + offset [a trained]
                                                             + per_painting log(n_a)
    p(a known hand painted it)     = sigmoid(slope[kind of top] z + chance[kind of top] (log A + log P(N(0,1) > z))
                                             + offset' [top trained] + bias)
    p(a) = p(known) p(a | known),   p(unknown hand) = 1 - p(known)

with n_a the hand's gallery paintings, A the number of hands, "top" the
most likely hand and z its score in units of the spread of the scores of
hands of its kind that did not paint the query (``OpenSet.null``). Whether
the painting is by a known hand rests on how well its best hand fits it;
log(A) lets the best of many unrelated hands fit by chance better than the
best of a few.

**The answer** (``verdicts``, ``answer``): "unknown hand" when p(unknown) is
at least one half, that is at least p(one of the known hands painted it)
(the decision that errs least when the probabilities are honest); else the
hand's name when p(top hand) reaches ``name_at``, the lowest level from
``PRECISION`` up at which named answers were right ``PRECISION`` of the time
on the fitting episodes (one level for a trained top hand, one for a new
one); below that, "probably <hand>, uncertain" ("perhaps <hand>, uncertain"
while p(top hand) is below one half: ``hedge``).
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
BLEND = 0.5  # the "nearest" aggregate's share of the "blend" aggregate, the prototype's the rest
AGGREGATES = ("prototype", "nearest", "blend")  # blend: the mean of the other two
PRECISION = 0.8  # named answers are right at least this often on the fitting episodes
KINDS = ("new", "trained")
UNKNOWN, NAMED, PROBABLY = "unknown hand", "named", "probably"
KNOWN_WEIGHTS = 6  # of p(known)'s logit (``_known_features``)
UNKNOWN_AT = 0.5  # p(unknown hand) from which the answer is "unknown hand"
PROBABLY_FROM = 0.5  # p(top hand) from which an uncertain answer says "probably"; below, "perhaps" (``hedge``)


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Paintings:
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

    def take(self, rows) -> Paintings:
        return Paintings(self.emb[rows], self.artists[rows], self.ids[rows])

    def of(self, names) -> Paintings:
        return self.take(np.isin(self.artists, names))

    @staticmethod
    def join(parts: list[Paintings]) -> Paintings:
        return Paintings(np.concatenate([p.emb for p in parts]), np.concatenate([p.artists for p in parts]),
                         np.concatenate([p.ids for p in parts]))


@dataclass
class Space:
    """One way of scoring hands: a whitening (``power``), an aggregate over a hand's paintings, a background size."""

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
    """The probability model's numbers: the logits' weights, the null scores and the naming levels.

    ``theta``: p(a | known)'s 4 weights, then p(known)'s 6 (the module
    docstring's order; a model saved with 5, one slope for both kinds, reads
    as the same model: ``from_array``); ``null``: mean and spread of a hand's score for a
    painting not by it (new hands, then trained); ``name_at``: the p(top
    hand) from which an answer is named (new, then trained top hand).
    """

    theta: np.ndarray = field(default_factory=lambda: np.r_[10.0, 10.0, np.zeros(KNOWN_WEIGHTS + 2)])
    null: np.ndarray = field(default_factory=lambda: np.r_[0.0, 1.0, 0.0, 1.0])
    name_at: np.ndarray = field(default_factory=lambda: np.r_[PRECISION, PRECISION])

    @property
    def hand_weights(self) -> np.ndarray:
        return self.theta[:4]

    @property
    def known_weights(self) -> np.ndarray:
        return self.theta[4:]

    def to_array(self) -> np.ndarray:
        return np.r_[self.theta, self.null, self.name_at]

    @classmethod
    def from_array(cls, a) -> OpenSet:
        a = np.asarray(a, np.float64)
        if len(a) == 4 + (KNOWN_WEIGHTS - 1) + 6:  # saved before the slope per kind: the trained one's difference
            a = np.insert(a, 5, 0.0)  # is 0
        t = 4 + KNOWN_WEIGHTS
        return cls(a[:t].copy(), a[t:t + 4].copy(), a[t + 4:t + 6].copy())


@dataclass
class AttributionModel:
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
    def from_state(cls, d) -> AttributionModel:
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


def save_attribution(path: Path, att: AttributionModel) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **att.to_state())


def load_attribution(path: Path) -> AttributionModel | None:
    """The attribution model of a run, or None for one written by an older pbn (`pbn eval` writes it anew)."""
    with np.load(path, allow_pickle=False) as d:
        return AttributionModel.from_state({k: d[k] for k in d.files}) if "trained_artists" in d.files else None


def principal(emb: np.ndarray, components: int = COMPONENTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean, principal directions and variances of ``emb`` (at most ``components``, none of negligible
    variance): what every whitening of it is made from."""
    x = np.asarray(emb, np.float64)
    mean = x.mean(0)
    if len(x) < 2:
        return mean, np.zeros((0, x.shape[1])), np.zeros(0)
    x = x - mean
    wide = len(x) <= x.shape[1]  # fewer paintings than dimensions: their Gram matrix is the smaller one
    ev, vec = np.linalg.eigh(x @ x.T if wide else x.T @ x)  # the SVD's values squared, in a third of its time
    ev, vec = np.maximum(ev[::-1], 0.0), vec[:, ::-1]
    keep = min(components, int((ev > ev[0] * 1e-8).sum()))
    ev, vec = ev[:keep], vec[:, :keep]
    vt = (x.T @ vec / np.sqrt(ev)).T if wide else vec.T
    return mean, vt, ev / max(len(x) - 1, 1)


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


def scoring_model(emb: np.ndarray, artists, ids, trained_artists=None, spaces: dict | None = None) -> AttributionModel:
    """An attribution model over the background ``emb`` (training paintings) that scores but has no probabilities
    yet: ``spaces`` per kind of hand, by default square-root whitened prototypes with a background term."""
    if spaces is None:
        default = space(emb, 0.25) if len(emb) > 1 else space(emb, 0.0)
        spaces = {kind: default for kind in KINDS}
    return AttributionModel(spaces, np.asarray(emb, np.float32), np.asarray(artists).astype(str),
                            np.asarray(ids).astype(str),
                            np.unique(np.asarray(artists if trained_artists is None else trained_artists).astype(str)))


@dataclass
class KnownHands:
    """The hands a painting is attributed among: their names, kinds and gallery paintings, whitened per space.

    Per kind of hand in the gallery: the gallery whitened in its space
    (``z``), each hand's sum of it (for prototypes, one painting left out at
    will) and the background r is measured on (``pool``).
    """

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

    @classmethod
    def from_gallery(cls, att: AttributionModel, emb: np.ndarray, artists, ids) -> KnownHands:
        """The hands of a gallery (raw embeddings ``emb`` of their paintings), ready to be scored against. r is
        measured on the background alone, so that a hand's score does not depend on how many others the gallery
        holds."""
        artists, ids = np.asarray(artists).astype(str), np.asarray(ids).astype(str)
        names, codes = np.unique(artists, return_inverse=True)
        known = cls(names, att.kinds(names), ids, codes, np.bincount(codes, minlength=len(names)),
                    att.background_artists, att.background_ids)
        for kind in set(KINDS[i] for i in np.unique(known.kinds)):
            sp = att.spaces[kind]
            z = sp.whiten(emb)
            known.z[kind], known.pool[kind] = z, att.whitened_background(sp)
            known.sums[kind] = (codes[None, :] == np.arange(len(names))[:, None]).astype(np.float64) @ z
        return known


def _background_term(sims: np.ndarray, pool_artists: np.ndarray, names: np.ndarray, k: int,
                     block: int = 1024) -> np.ndarray:
    """(Q, A) r(q, not a): the mean of the k highest similarities to paintings not by a (-inf: left out); only a
    hand among a query's k nearest has an r of its own, the others share the plain mean of the k nearest."""
    out = np.zeros((len(sims), len(names)))
    if k == 0 or not sims.shape[1]:
        return out
    codes = np.full(len(pool_artists), -1)  # each background painting's hand, into names (-1: none of them)
    if len(names):
        sorter = np.argsort(names)
        at = sorter[np.minimum(np.searchsorted(names, pool_artists, sorter=sorter), len(names) - 1)]
        codes = np.where(names[at] == pool_artists, at, -1)
    take = min(sims.shape[1], k + 64)  # enough to replace one hand's paintings among the k nearest
    for start in range(0, len(sims), block):
        part = sims[start:start + block]
        near = np.argpartition(-part, take - 1, axis=1)[:, :take] if take < part.shape[1] else \
            np.broadcast_to(np.arange(take), part.shape)
        s = np.take_along_axis(part, near, 1)
        order = np.argsort(-s, axis=1, kind="stable")
        s, who = np.take_along_axis(s, order, 1), codes[np.take_along_axis(near, order, 1)]
        finite = np.isfinite(s)
        s = np.where(finite, s, 0.0)

        rows = out[start:start + block]
        rows[:] = _first_k_mean(s, finite, k)[:, None]
        hands = np.where(finite[:, :k], who[:, :k], -1)  # (q, k): the hands among the k nearest
        alone = _first_k_mean(s[:, None, :], finite[:, None, :] & (who[:, None, :] != hands[:, :, None]), k)
        q, j = np.nonzero(hands >= 0)
        rows[q, hands[q, j]] = alone[q, j]
    return out


def _first_k_mean(values: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """The mean of the first k entries (last axis) of ``values`` where ``mask`` holds; 0 where none does."""
    chosen = mask & (np.cumsum(mask, -1) <= k)
    n = chosen.sum(-1)
    return np.where(n > 0, (values * chosen).sum(-1) / np.maximum(n, 1), 0.0)


def _blend(prototype: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """The "blend" aggregate from the other two."""
    return (1 - BLEND) * prototype + BLEND * nearest


def _hand_similarity(known: KnownHands, kind: str, aggregate: str, zq: np.ndarray, itself: np.ndarray) -> np.ndarray:
    """(Q, A) cos to each hand's prototype, the mean of its NEAREST closest paintings, or the blend of both; -inf
    for a hand left with no painting once the query's own painting is set aside (``itself``: query x gallery)."""
    if aggregate == "blend":
        return _blend(*(_hand_similarity(known, kind, a, zq, itself) for a in ("prototype", "nearest")))
    z = known.z[kind]
    if aggregate == "nearest":
        sims = np.where(itself, -np.inf, zq @ z.T)
        out = np.full((len(zq), len(known.names)), -np.inf)
        for a in range(len(known.names)):
            top = -np.sort(-sims[:, known.codes == a], axis=1)[:, :NEAREST]
            with np.errstate(invalid="ignore"):
                out[:, a] = np.where(np.isfinite(top).any(1), np.where(np.isfinite(top), top, 0).sum(1)
                                     / np.maximum(np.isfinite(top).sum(1), 1), -np.inf)
        return out
    sums = known.sums[kind]
    cos = zq @ normalise(sums).T
    cos[:, known.counts == 0] = -np.inf
    for q in np.flatnonzero(itself.any(1)):  # the query is a gallery painting (or more): left out of its hand
        for a in np.unique(known.codes[itself[q]]):
            own = itself[q] & (known.codes == a)
            cos[q, a] = normalise(sums[a] - z[own].sum(0)) @ zq[q] if known.counts[a] > own.sum() else -np.inf
    return cos


def own_paintings(ids: np.ndarray, q_ids) -> np.ndarray:
    """(Q, G): painting g is query q itself (``q_ids``: per query its id, or a tuple of the ids of the paintings
    it is, when the collection holds it more than once)."""
    if all(isinstance(q, str) for q in q_ids):
        return ids[None, :] == np.asarray(q_ids).astype(str)[:, None]
    return np.stack([np.isin(ids, [q] if isinstance(q, str) else list(q)) for q in q_ids]).reshape(len(q_ids), -1)


def score_parts(att: AttributionModel, known: KnownHands, queries: np.ndarray, q_ids,
                every_space: bool = False) -> dict:
    """Per kind of hand in the gallery: (its space, {aggregate: (Q, A) hand similarity}, (Q, A) r), for its space's
    aggregate and k, or with ``every_space`` for every aggregate and k = BACKGROUND_K (``choose_space`` scores every
    space of one whitening from one pass). A query's own painting is left out of its hand and of r."""
    itself = own_paintings(known.ids, q_ids)
    out = {}
    for kind in known.z:
        sp = att.spaces[kind]
        zq = sp.whiten(queries)
        sims = zq @ known.pool[kind].T
        sims[own_paintings(known.pool_ids, q_ids)] = -np.inf
        if every_space:  # the blend from the other two, not scored again
            hand = {a: _hand_similarity(known, kind, a, zq, itself) for a in AGGREGATES if a != "blend"}
            hand["blend"] = _blend(hand["prototype"], hand["nearest"])
        else:
            hand = {sp.aggregate: _hand_similarity(known, kind, sp.aggregate, zq, itself)}
        out[kind] = (sp, hand,
                     _background_term(sims, known.pool_artists, known.names, BACKGROUND_K if every_space else sp.k))
    return out


def by_kind(known: KnownHands, per_kind: dict, n: int) -> np.ndarray:
    """(Q, A): each hand's column from the scores of its kind."""
    out = np.full((n, len(known.names)), -np.inf)
    for kind, s in per_kind.items():
        mine = known.kinds == KINDS.index(kind)
        out[:, mine] = s[:, mine]
    return out


def scores(att: AttributionModel, known: KnownHands, queries: np.ndarray, q_ids) -> np.ndarray:
    """(Q, A): s(q, a) for raw query embeddings, each hand in its kind's space; a query that is a gallery painting
    is left out of its hand and of r."""
    parts = score_parts(att, known, queries, q_ids)
    return by_kind(known, {kind: sims[sp.aggregate] - r for kind, (sp, sims, r) in parts.items()}, len(queries))


def hand_features(s: np.ndarray, kinds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(Q, A, 4): the features of a hand's logit in p(a | known) (``OpenSet.hand_weights``' order)."""
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
    """(Q, KNOWN_WEIGHTS) features of "one of the known hands painted it" (``OpenSet.known_weights``' order) and
    (Q,) its fixed offset.

    For an unknown painting, the top score is the best of A hands' chance scores; for a known one, mostly its own
    hand's. Bayes' rule then gives log odds = log f1(s) - log f0(s) - log A + (A - 1) P(chance > s) (to first
    order): a function of the top score z (in units of the null, the chance scores' distribution, of its kind)
    beside the expected number of hands scoring above it by chance, and -log A as a fixed offset, so that the
    number of hands is extrapolated by law, not by fit."""
    q = np.arange(len(s))
    best, trained = s[q, top], np.broadcast_to(kinds, s.shape)[q, top] == 1
    mean, spread = np.where(trained, null[2], null[0]), np.where(trained, null[3], null[1])
    z = np.where(np.isfinite(best), (best - mean) / np.maximum(spread, 1e-6), 0.0)
    n_hands = np.maximum(np.isfinite(s).sum(1), 1)
    chance = np.log(n_hands) + _log_tail(z)
    return np.stack([z, z * trained, chance, chance * trained, trained, np.ones(len(s))], -1), np.zeros(len(s))


def softmax(logits: np.ndarray) -> np.ndarray:
    top = np.max(logits, -1, keepdims=True)
    e = np.exp(logits - np.where(np.isfinite(top), top, 0.0))
    return e / e.sum(-1, keepdims=True)


def hand_probabilities(weights: np.ndarray, s: np.ndarray, kinds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(Q, A) p(hand a | one of the known hands painted it), from ``OpenSet.hand_weights``."""
    return softmax(np.where(np.isfinite(s), hand_features(s, kinds, counts) @ weights, -np.inf))


def known_logit(model: OpenSet, s: np.ndarray, kinds: np.ndarray, counts: np.ndarray):
    """(Q, A) p(a | known), then the (Q, KNOWN_WEIGHTS) features and (Q,) offset of p(known)'s logit, whose weights are
    ``model.known_weights``: the open-set logits, built here alone for using the model and for fitting it."""
    closed = hand_probabilities(model.hand_weights, s, kinds, counts)
    features, offset = _known_features(s, kinds, closed.argmax(1), model.null)
    return closed, features, offset


def open_set_probabilities(model: OpenSet, s: np.ndarray, kinds: np.ndarray, counts: np.ndarray):
    """(Q, A) p(by hand a) and (Q,) p(by a hand not known), from the scores ``s`` of hands of ``kinds``."""
    closed, features, offset = known_logit(model, s, kinds, counts)
    p_known = 1 / (1 + np.exp(-np.clip(features @ model.known_weights + offset, -50, 50)))
    return closed * p_known[:, None], 1 - p_known


def probabilities(att: AttributionModel, known: KnownHands, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, A) p(by hand a) and (Q,) p(by a hand not known), from the scores: p(a) = p(known) p(a | known)."""
    if att.open_set is None or not s.shape[1]:  # no probability model (eval found no artists to fit it on)
        return np.full(s.shape, np.nan), np.full(len(s), np.nan)
    return open_set_probabilities(att.open_set, s, known.kinds, known.counts)


def hedge(p_top: float) -> str:
    """The word an uncertain answer puts before the hand: "probably" when the hand is likelier than not, else
    "perhaps" (a hand at p = 0.2 is the likeliest of many, not a probable one)."""
    return "probably" if p_top >= PROBABLY_FROM else "perhaps"


def verdicts(p_top, p_unknown, name_at) -> np.ndarray:
    """The three-way rule, per query: UNKNOWN when p(unknown) is at least one half, that is at least p(known) (or
    there is no top hand), NAMED when p(top hand) reaches ``name_at``, else PROBABLY."""
    p_top, p_unknown = np.asarray(p_top, np.float64), np.asarray(p_unknown, np.float64)
    unknown = ~np.isfinite(p_top) | (p_unknown >= UNKNOWN_AT)
    return np.where(unknown, UNKNOWN, np.where(p_top >= name_at, NAMED, PROBABLY))


def answer(p_top: float, p_unknown: float, name_at: float) -> str:
    """One query's verdict (``verdicts``): UNKNOWN, NAMED or PROBABLY."""
    return str(verdicts(p_top, p_unknown, name_at))


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


def rank(att: AttributionModel, known: KnownHands, query: np.ndarray, query_id: str | tuple = "") -> Ranking:
    """One query's hands ranked by probability (score within a kind), with the three-way answer; ``query_id``: the
    gallery painting(s) the query is, left out."""
    s = scores(att, known, np.atleast_2d(query), [query_id])
    p, unknown = probabilities(att, known, s)
    key = np.where(np.isfinite(p[0]), p[0], s[0])
    order = np.lexsort((-s[0], -key))
    order = order[np.isfinite(s[0][order])]
    top = float(p[0][order[0]]) if len(order) else float("nan")
    name_at = float(att.open_set.name_at[known.kinds[order[0]]]) if att.open_set and len(order) else PRECISION
    return Ranking(known.names[order], s[0][order], p[0][order], float(unknown[0]),
                   answer(top, float(unknown[0]), name_at) if att.open_set else UNKNOWN, name_at)
