"""Who painted this? Known hands ranked over a gallery, a probability for each, and an honest "unknown hand".

The score, chosen by measurement on artists never trained on (docs/benchmarks.md, "Attribution"):

    z(x)       = normalise((x - mu) V / lambda^(1/4))   PCA of training paintings' embeddings, 512 components,
                                                        square-root whitening: it evens out the directions the
                                                        training artists stretched, without full whitening's noise
    P_a        = normalise(mean of z over the known paintings of hand a)      the hand's prototype
    r(q, not a) = mean of the 20 highest cos(z(q), z(t)) over the other paintings t: the training paintings and
                 the known ones, those by a (and q itself) aside
    s(q, a)    = cos(z(q), P_a) - r(q, not a)

r says how close the query sits to other hands in general: a painting near
everything (a hub) is not thereby a known hand. The prototype treats a
painter of many manners and a tight-knit one alike better than the nearest
few paintings do. The whitening lives in the score, not in the embedding
(applied to the embedding it lowers pair AUC).

The probabilities are open-set: p(a) = exp(beta s_a) / (sum over known hands
b of exp(beta s_b) + exp(beta t)), the last term standing for a hand not
known. beta and t are fitted by maximum likelihood on episodes among the
calib split's artists, whom the network never saw (half known, half not, as
in the evaluation's protocol), so the probabilities stay honest however many
hands the gallery holds. The answer is "unknown hand" when no hand reaches
``UNKNOWN_BELOW``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pbn_cli.core.atomic import atomic_path

COMPONENTS = 512
BACKGROUND_K = 20
BACKGROUND_MAX = 4096  # training paintings the whitening is fitted on and the background holds (seeded sample)
UNKNOWN_BELOW = 0.5  # "unknown hand" when no hand is at least this likely
EPISODES = 20  # known/unknown divisions of the calibration artists the probabilities are fitted on


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Attributor:
    """What scores a query against known hands: the whitening, the background, the open-set probability model."""

    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (D, C): principal directions / lambda^(1/4)
    background: np.ndarray  # (B, C): whitened training paintings
    background_artists: np.ndarray  # (B,)
    background_ids: np.ndarray  # (B,) image ids, so that a painting is never its own background
    open_set: tuple[float, float] | None = None  # (beta, t) of the probabilities
    fitted_on: dict = field(default_factory=dict)

    def whiten(self, x: np.ndarray) -> np.ndarray:
        return normalise((np.asarray(x, np.float32) - self.mean) @ self.projection)

    def to_state(self) -> dict:
        """Plain arrays (numbers and text): an .npz file beside the run, or tensors in an exported model."""
        return {"mean": self.mean, "projection": self.projection, "background": self.background,
                "background_artists": self.background_artists.astype(str),
                "background_ids": self.background_ids.astype(str),
                "open_set": np.asarray(self.open_set if self.open_set else [], np.float64),
                "fitted_on": np.asarray(json.dumps(self.fitted_on))}

    @classmethod
    def from_state(cls, d) -> Attributor:
        open_set = np.asarray(d["open_set"], np.float64)
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["projection"], np.float32),
                   np.asarray(d["background"], np.float32), np.asarray(d["background_artists"]).astype(str),
                   np.asarray(d["background_ids"]).astype(str),
                   (float(open_set[0]), float(open_set[1])) if len(open_set) else None, json.loads(str(d["fitted_on"])))


def save_attributor(path: Path, att: Attributor) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **att.to_state())


def load_attributor(path: Path) -> Attributor:
    with np.load(path, allow_pickle=False) as d:
        return Attributor.from_state({k: d[k] for k in d.files})


def fit(emb: np.ndarray, artists, ids, components: int = COMPONENTS) -> Attributor:
    """The whitening (PCA of ``emb``, square-root scaled) and the background, from training paintings."""
    x = np.asarray(emb, np.float64)
    mean = x.mean(0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    lam = sv**2 / max(len(x) - 1, 1)
    keep = min(components, int((lam > lam[0] * 1e-8).sum())) if len(lam) else 0
    projection = (vt[:keep].T / lam[:keep] ** 0.25).astype(np.float32)
    att = Attributor(mean.astype(np.float32), projection, np.zeros((0, keep), np.float32), np.zeros(0, str),
                     np.zeros(0, str))
    att.background = att.whiten(emb)
    att.background_artists, att.background_ids = np.asarray(artists).astype(str), np.asarray(ids).astype(str)
    return att


@dataclass
class Known:
    """The known hands: their paintings whitened, each hand's sum (for prototypes, one painting left out at will),
    and the pool of other paintings r is measured on (the known ones and the background's others)."""

    z: np.ndarray
    ids: np.ndarray
    names: np.ndarray
    codes: np.ndarray  # hand of each known painting, into names
    sums: np.ndarray
    counts: np.ndarray
    pool: np.ndarray  # whitened paintings r is measured on
    pool_artists: np.ndarray
    pool_ids: np.ndarray


def known(att: Attributor, z: np.ndarray, artists, ids) -> Known:
    artists, ids = np.asarray(artists).astype(str), np.asarray(ids).astype(str)
    names, codes = np.unique(artists, return_inverse=True)
    sums = np.zeros((len(names), z.shape[1]))
    np.add.at(sums, codes, z)
    extra = ~np.isin(att.background_ids, ids)
    return Known(z, ids, names, codes, sums, np.bincount(codes, minlength=len(names)),
                 np.concatenate([z, att.background[extra]]), np.r_[artists, att.background_artists[extra]],
                 np.r_[ids, att.background_ids[extra]])


def scores(hands: Known, zq: np.ndarray, q_ids, k: int = BACKGROUND_K) -> np.ndarray:
    """(Q, A): s(q, a) for whitened queries; a query that is a known painting is left out of its hand and of r."""
    q_ids = np.asarray(q_ids).astype(str)
    sims = zq @ hands.pool.T
    sims[hands.pool_ids[None, :] == q_ids[:, None]] = -np.inf
    take = min(sims.shape[1], k + 64)  # enough to replace one hand's paintings among the k nearest
    near = np.argsort(-sims, axis=1)[:, :take]
    out = np.empty((len(zq), len(hands.names)))
    at = {i: n for n, i in enumerate(hands.ids)}
    for i, row in enumerate(near):
        s, who = sims[i, row], hands.pool_artists[row]
        r = np.full(len(hands.names), s[np.isfinite(s)][:k].mean() if np.isfinite(s).any() else 0.0)
        for j in np.flatnonzero(np.isin(hands.names, who[:k])):  # only a hand among the k nearest changes r
            others = s[(who != hands.names[j]) & np.isfinite(s)][:k]
            r[j] = others.mean() if len(others) else 0.0
        sums, counts = hands.sums, hands.counts
        if q_ids[i] in at:  # the query itself is a known painting: left out of its hand's prototype
            mine = hands.codes[at[q_ids[i]]]
            sums, counts = sums.copy(), counts.copy()
            sums[mine] -= hands.z[at[q_ids[i]]]
            counts[mine] -= 1
        cos = normalise(sums) @ zq[i]
        out[i] = np.where(counts > 0, cos - r, -np.inf)
    return out


def probabilities(att: Attributor, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, A) p(by hand a) and (Q,) p(by a hand not known), from the scores (softmax with an unknown hand)."""
    if att.open_set is None:  # no probability model (eval found no artists to fit it on)
        return np.full(s.shape, np.nan), np.full(len(s), np.nan)
    beta, t = att.open_set
    logits = np.concatenate([beta * s, np.full((len(s), 1), beta * t)], 1)
    logits -= np.max(np.where(np.isfinite(logits), logits, -np.inf), 1, keepdims=True)
    e = np.where(np.isfinite(logits), np.exp(logits), 0.0)
    p = e / e.sum(1, keepdims=True)
    return p[:, :-1], p[:, -1]


def episodes(artists, seed: int, n: int = EPISODES):
    """Seeded divisions of a set of artists into known hands (first half, rounded up) and unknown ones."""
    names = np.unique(np.asarray(artists).astype(str))
    for d in range(n):
        shuffled = names[np.random.default_rng([seed, d]).permutation(len(names))]
        yield shuffled[: math.ceil(len(names) / 2)]


def fit_open_set(att: Attributor, emb: np.ndarray, artists, ids, seed: int = 0) -> tuple[float, float] | None:
    """(beta, t) by maximum likelihood over episodes among ``artists`` (never trained on): in each, every painting
    of a known hand is a query (left out of its hand), every painting of the others a query by an unknown hand."""
    artists, ids = np.asarray(artists).astype(str), np.asarray(ids).astype(str)
    if len(np.unique(artists)) < 2:
        return None
    z = att.whiten(emb)
    rows, labels = [], []
    for names in episodes(artists, seed):
        mine = np.isin(artists, names)
        hands = known(att, z[mine], artists[mine], ids[mine])
        s = scores(hands, z, ids)
        rows += list(s)
        labels += [int(np.searchsorted(hands.names, a)) if m else -1 for a, m in zip(artists, mine)]
    return _maximum_likelihood(rows, np.array(labels))


def _log_likelihood(s: np.ndarray, labels: np.ndarray, beta: float, t: float) -> float:
    """Of the episodes' answers: ``s`` (R, A) scores padded with -inf, ``labels`` the true hand or -1 (unknown)."""
    logits = np.concatenate([beta * s, np.full((len(s), 1), beta * t)], 1)
    top = logits.max(1, keepdims=True)
    norm = top[:, 0] + np.log(np.exp(logits - top).sum(1))
    return float((logits[np.arange(len(s)), labels] - norm).sum())  # label -1: the last column, the unknown hand


def _maximum_likelihood(rows: list[np.ndarray], labels: np.ndarray) -> tuple[float, float]:
    """A grid over (beta, t), refined twice around the best: two parameters need no more."""
    s = np.full((len(rows), max(len(r) for r in rows)), -np.inf)
    for i, r in enumerate(rows):
        s[i, : len(r)] = r
    finite = s[np.isfinite(s)]
    betas, ts = np.geomspace(1, 1000, 31), np.linspace(finite.min(), finite.max(), 31)
    for _ in range(3):
        _, beta, t = max((_log_likelihood(s, labels, b, t), b, t) for b in betas for t in ts)
        db, dt = betas[1] / betas[0], ts[1] - ts[0]
        betas, ts = np.geomspace(beta / db, beta * db, 9), np.linspace(t - dt, t + dt, 9)
    return float(beta), float(t)


@dataclass
class Hands:
    """One query's hands, most likely first, and how likely it is that none of them painted it."""

    artists: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    unknown_probability: float

    @property
    def unknown(self) -> bool:
        return bool(not len(self.probabilities) or self.probabilities[0] < UNKNOWN_BELOW)


def rank(att: Attributor, hands: Known, query: np.ndarray, query_id: str = "") -> Hands:
    """One query's hands ranked by s(q, a), with their probabilities."""
    s = scores(hands, att.whiten(np.atleast_2d(query)), [query_id])
    p, unknown = probabilities(att, s)
    order = np.argsort(-s[0], kind="stable")
    order = order[np.isfinite(s[0][order])]
    return Hands(hands.names[order], s[0][order], p[0][order], float(unknown[0]))
