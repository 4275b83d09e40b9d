"""Who painted this? Known hands ranked over a gallery, a probability for each, and an honest "unknown hand".

The score, chosen by measurement on artists never trained on (docs/benchmarks.md, "Attribution"):

    z(x)      = normalise((x - mu) V / lambda^(1/4))   PCA of training paintings' embeddings, 512 components,
                                                       square-root whitening (it evens out the directions the
                                                       training artists stretched, without the noise of full whitening)
    P_a       = normalise(mean of z over the gallery paintings of artist a)        the hand's prototype
    r_q(not a) = mean of the 20 largest cos(z(q), z(t)), t a background painting not by a
    s(q, a)   = cos(z(q), P_a) - r_q(not a)

The background (training paintings) says how close the query sits to other
hands in general: a painting near everything (a hub) is not thereby a known
hand. The prototype treats a painter of many manners and a tight-knit one
alike better than the nearest few paintings did. The whitening lives in the
score, not in the embedding (applied to the embedding it lowers pair AUC).

p(q is by a) = 1 / (1 + exp(-(A s + B))), fitted on leave-one-out episodes
among the calib split's artists, whom the network never saw; the answer is
"unknown hand" when no hand reaches ``UNKNOWN_BELOW``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pbn_cli.core.atomic import atomic_path
from pbn_cli.model.calibration import fit_platt

COMPONENTS = 512
BACKGROUND_K = 20
BACKGROUND_MAX = 4096  # training paintings the whitening is fitted on and the background holds (seeded sample)
UNKNOWN_BELOW = 0.5  # "unknown hand" when no hand is at least this likely


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class Attributor:
    """What scores a query against known hands: the whitening, the background, and the probability map."""

    mean: np.ndarray  # (D,)
    projection: np.ndarray  # (D, C): principal directions / lambda^(1/4)
    background: np.ndarray  # (B, C): whitened training paintings
    background_artists: np.ndarray  # (B,)
    platt: tuple[float, float] | None = None  # (A, B) of p = sigmoid(A s + B)
    fitted_on: dict = field(default_factory=dict)

    def whiten(self, x: np.ndarray) -> np.ndarray:
        return normalise((np.asarray(x, np.float32) - self.mean) @ self.projection)

    def probability(self, s: np.ndarray) -> np.ndarray:
        a, b = self.platt if self.platt else (np.nan, np.nan)
        return 1 / (1 + np.exp(-np.clip(a * np.asarray(s, np.float64) + b, -50, 50)))

    def to_state(self) -> dict:
        """Plain arrays (numbers and text): an .npz file beside the run, or tensors in an exported model."""
        return {"mean": self.mean, "projection": self.projection, "background": self.background,
                "background_artists": self.background_artists.astype(str),
                "platt": np.asarray(self.platt if self.platt else [], np.float64),
                "fitted_on": np.asarray(json.dumps(self.fitted_on))}

    @classmethod
    def from_state(cls, d) -> Attributor:
        platt = np.asarray(d["platt"], np.float64)
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["projection"], np.float32),
                   np.asarray(d["background"], np.float32), np.asarray(d["background_artists"]).astype(object),
                   (float(platt[0]), float(platt[1])) if len(platt) else None, json.loads(str(d["fitted_on"])))


def save_attributor(path: Path, att: Attributor) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **att.to_state())


def load_attributor(path: Path) -> Attributor:
    with np.load(path, allow_pickle=False) as d:
        return Attributor.from_state({k: d[k] for k in d.files})


def fit(emb: np.ndarray, artists, components: int = COMPONENTS) -> Attributor:
    """The whitening (PCA of ``emb``, square-root scaled) and the background, from training paintings."""
    x = np.asarray(emb, np.float64)
    mean = x.mean(0)
    _, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
    lam = sv**2 / max(len(x) - 1, 1)
    keep = min(components, int((lam > lam[0] * 1e-8).sum())) if len(lam) else 0
    projection = (vt[:keep].T / lam[:keep] ** 0.25).astype(np.float32)
    att = Attributor(mean.astype(np.float32), projection, np.zeros((0, keep), np.float32), np.zeros(0, object))
    att.background = att.whiten(emb)
    att.background_artists = np.asarray(artists, object).astype(str)
    return att


def prototypes(z: np.ndarray, artists) -> tuple[np.ndarray, np.ndarray]:
    """(artist names, their prototypes): the normalised mean of each artist's whitened gallery paintings."""
    names, codes = np.unique(np.asarray(artists, object).astype(str), return_inverse=True)
    sums = np.zeros((len(names), z.shape[1]))
    np.add.at(sums, codes, z)
    return names, normalise(sums).astype(np.float32)


def background_similarity(att: Attributor, zq: np.ndarray, names: np.ndarray, k: int = BACKGROUND_K) -> np.ndarray:
    """(Q, A): r_q(not a), the mean of the k highest similarities of each query to background paintings not by a."""
    if not len(att.background):
        return np.zeros((len(zq), len(names)))
    sims = zq @ att.background.T
    take = min(sims.shape[1], k + 64)  # enough to replace one artist's paintings among the k nearest
    near = np.argsort(-sims, axis=1)[:, :take]
    out = np.empty((len(zq), len(names)))
    for i, row in enumerate(near):
        s, who = sims[i, row], att.background_artists[row]
        out[i] = s[:k].mean()
        for j in np.flatnonzero(np.isin(names, who[:k])):  # only a hand among the k nearest changes r
            out[i, j] = s[who != names[j]][:k].mean()
    return out


def scores(att: Attributor, zq: np.ndarray, names: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """(Q, A): s(q, a) for whitened queries ``zq`` against the prototypes."""
    return zq @ protos.T - background_similarity(att, zq, names)


def leave_one_out_scores(att: Attributor, z: np.ndarray, artists) -> tuple[np.ndarray, np.ndarray]:
    """Every painting of a set of hands scored against every hand of the set, its own painting left out of its
    hand's prototype: (scores (N, A), is-its-hand (N, A))."""
    artists = np.asarray(artists, object).astype(str)
    names, codes = np.unique(artists, return_inverse=True)
    sums = np.zeros((len(names), z.shape[1]))
    np.add.at(sums, codes, z)
    s = np.empty((len(z), len(names)))
    background = background_similarity(att, z, names)
    for i in range(len(z)):
        own = sums.copy()
        own[codes[i]] -= z[i]
        s[i] = normalise(own) @ z[i]
    mine = codes[:, None] == np.arange(len(names))[None, :]
    alone = np.bincount(codes)[codes] == 1  # a hand with this one painting: nothing left to compare with
    return (s - background)[~alone], mine[~alone]


def calibrate(att: Attributor, emb: np.ndarray, artists) -> tuple[float, float] | None:
    """(A, B) of the probability map from leave-one-out episodes among ``artists`` (never trained on); None if too few."""
    s, mine = leave_one_out_scores(att, att.whiten(emb), artists)
    if mine.shape[1] < 2 or not mine.any():
        return None
    a, b = fit_platt(-s.ravel(), mine.ravel())  # fit_platt maps a distance: p = 1 / (1 + exp(a d + b)), d = -s
    return a, -b  # 1 / (1 + exp(-a s + b)) = sigmoid(a s - b)


@dataclass
class Hands:
    """One query's hands, most likely first."""

    artists: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray

    @property
    def unknown(self) -> bool:
        return not len(self.probabilities) or self.probabilities[0] < UNKNOWN_BELOW


def rank(att: Attributor, query: np.ndarray, names: np.ndarray, protos: np.ndarray) -> list[Hands]:
    """Each query's hands ranked by s(q, a), with their probabilities."""
    s = scores(att, att.whiten(np.atleast_2d(query)), names, protos)
    out = []
    for row in s:
        order = np.argsort(-row, kind="stable")
        out.append(Hands(names[order], row[order], att.probability(row[order])))
    return out
