"""attribute: who painted this? The known hands ranked, each with a probability and its closest paintings, and
one of three answers: the hand's name, "probably <hand>, uncertain" ("perhaps" below p = 0.5), or "unknown hand".

The known hands are the artists of the workspace's paintings (all of them,
or one split's: ``among``), embedded by the model's store; the scores, the
probabilities and the answer rule are the attribution model `pbn eval`
fitted (answers/attribution.py). A query that is itself one of the
workspace's paintings (its file, or the same picture in another file: a
perceptual hash within ``NEAR_BITS`` of the cached painting's) is left out
of its own hand, as eval leaves a query out of its gallery: the answer is
the model's own reading of the painting, and says which painting of the
workspace it is.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pbn_cli.core.errors import InputError
from pbn_cli.core.pictures import pyplot, save_figure, short
from pbn_cli.core.progress import SILENT, Progress
from pbn_cli.core.workspace import Workspace
from pbn_cli.data import imaging
from pbn_cli.data.cache import CacheData
from pbn_cli.inference.search import Gallery, gallery, same_painting
from pbn_cli.answers import attribution as scoring
from pbn_cli.answers.metrics import row_distances
from pbn_cli.model.trained import TrainedModel

if TYPE_CHECKING:
    import torch

AMONG = ("all", "train", "val", "calib", "test")
ANSWER_COLOURS = {scoring.NAMED: "tab:green", scoring.PROBABLY: "tab:orange", scoring.UNKNOWN: "tab:red"}
CLOSEST = 3  # paintings shown for each proposed hand


@dataclass
class Candidate:
    """One proposed hand for a painting: the artist, its score and probability, and its paintings closest to it."""

    artist: str
    score: float
    probability: float
    closest: pd.DataFrame  # image_id, split, cache_row, distance, same_artist_probability


@dataclass
class Attribution:
    """Who painted one query: the proposed hands, most likely first, p(unknown hand) and the three-way verdict."""

    query: str
    hands: list[Candidate]  # most likely first
    verdict: str  # scoring.NAMED, scoring.PROBABLY or scoring.UNKNOWN (answers/attribution.verdicts)
    unknown_probability: float  # that none of the known hands painted it
    name_at: float  # p(top hand) from which a hand is named
    in_workspace: pd.DataFrame | None = None  # image_id, artist, split: the workspace's copies of it, left out

    @property
    def unknown(self) -> bool:
        return self.verdict == scoring.UNKNOWN

    @property
    def answer(self) -> str:
        """In words: the hand, "probably <hand>, uncertain" ("perhaps …" below p = 0.5), or "unknown hand"."""
        if self.unknown or not self.hands:
            return scoring.UNKNOWN
        top = self.hands[0]
        if self.verdict == scoring.NAMED:
            return top.artist
        return f"{scoring.hedge(top.probability)} {top.artist}, uncertain"

    @property
    def reason(self) -> str:
        """Why the answer is what it is, in words (the rule: answers/attribution.verdicts), and which of the
        workspace's paintings the query is, if it is one."""
        return self._rule() + self._copies()

    def _rule(self) -> str:
        u = self.unknown_probability
        if self.unknown or not self.hands:
            return (f"p(unknown hand) = {u:.2f}, at least {scoring.UNKNOWN_AT:g}: more likely by none of the known "
                    "hands than by one of them")
        top = self.hands[0]
        if self.verdict == scoring.NAMED:
            return (f"p = {top.probability:.2f} reaches {self.name_at:.2f}, where named answers were right "
                    f"{scoring.PRECISION:.0%} of the time")
        return (f"more likely by one of the known hands than by none (p(unknown hand) = {u:.2f}), {top.artist} the "
                f"likeliest of them, but at p = {top.probability:.2f}, below the {self.name_at:.2f} a name needs")

    def _copies(self) -> str:
        if self.in_workspace is None or not len(self.in_workspace):
            return ""
        said = "; ".join(f"{r.image_id}, {r.artist}, {r.split} split" for r in self.in_workspace.head(3).itertuples())
        more = f" and {len(self.in_workspace) - 3} more" if len(self.in_workspace) > 3 else ""
        return (f"; the workspace holds this painting ({said}{more}): set aside, so the answer rests on the hands' "
                "other paintings")

    def to_dict(self) -> dict:
        return {"query": self.query, "answer": self.answer, "verdict": self.verdict, "unknown_hand": self.unknown,
                "named": self.verdict == scoring.NAMED, "named_from": self.name_at, "reason": self.reason,
                "unknown_hand_probability": self.unknown_probability,
                "in_workspace": [] if self.in_workspace is None else self.in_workspace.to_dict("records"),
                "hands": [{"artist": h.artist, "probability": h.probability, "score": h.score,
                           "closest": h.closest.drop(columns=["cache_row"]).to_dict("records")} for h in self.hands]}


def check_request(model: TrainedModel, among: str, k: int) -> scoring.AttributionModel:
    if among not in AMONG:
        raise InputError(f"--among must be one of {', '.join(AMONG)}, got {among!r}")
    if k < 1:
        raise InputError("-k must be at least 1")
    if model.attribution is None and model.runtime is not None and model.source is None:  # an .onnx file
        raise InputError(f"{model.runtime.path.name} is an ONNX model, which carries no attribution model, and the "
                         f"workspace has no run {model.name} evaluated with these weights: attribute with the run "
                         f"(--run {model.name}) or a .pt made by `pbn export {model.name} FILE.pt`")
    if model.attribution is None or model.attribution.open_set is None:
        raise InputError(f"run {model.name} has no attribution model for its {model.which} checkpoint: `pbn eval "
                         f"--run {model.name}` fits it (it needs two artists with two paintings each, in calib, val or train)")
    return model.attribution


def known_hands(g: Gallery, model: TrainedModel, among: str) -> scoring.KnownHands:
    """The artists of the gallery's paintings (of one split with ``among``) as hands to attribute to."""
    pool = np.flatnonzero(np.ones(len(g.table), bool) if among == "all" else (g.table["split"] == among).to_numpy())
    if not len(pool):
        raise InputError(f"--among {among}: the workspace has no paintings in the {among} split")
    table = g.table.iloc[pool]
    return scoring.KnownHands.from_gallery(model.attribution, g.emb[pool], table["artist"], table["image_id"])


def attribute_one(g: Gallery, known: scoring.KnownHands, model: TrainedModel, name: str, query: np.ndarray, k: int,
                  itself: np.ndarray | None = None) -> Attribution:
    """One painting's hands; ``itself`` marks gallery rows that are the query (``same_painting``), left out of its
    hand and named in the answer."""
    itself = np.zeros(len(g.table), bool) if itself is None else itself
    copies = g.table.iloc[np.flatnonzero(itself)][["image_id", "artist", "split"]].astype(str).reset_index(drop=True)
    ranked = scoring.rank(model.attribution, known, query, tuple(copies["image_id"]))
    artists = g.table["artist"].to_numpy(str)
    top = [Candidate(str(a), float(s), float(p), _closest(g, np.flatnonzero((artists == a) & ~itself), query, model))
           for a, s, p in zip(ranked.artists[:k], ranked.scores[:k], ranked.probabilities[:k])]
    return Attribution(name, top, ranked.answer, ranked.unknown_probability, ranked.name_at, copies)


def attribute(ws: Workspace, model: TrainedModel, images: list, *, among: str = "all", k: int = 5,
              device: torch.device | None, g: Gallery | None = None, progress: Progress = SILENT,
              pixels: list | None = None) -> list[Attribution]:
    """Each image's (a file, a PIL image or an array) most likely hands among the workspace's artists, or "unknown
    hand"; a painting of the workspace (its file, or a copy: ``same_painting``) is left out of its own hand.
    ``pixels``: the images as ``model.read`` gave them already (not decoded again)."""
    check_request(model, among, k)
    names = [imaging.image_name(image, n) for n, image in enumerate(images)]
    queries = pixels if pixels is not None else [model.read(image, None if imaging.is_file(image) else name)
                                                 for image, name in zip(images, names)]  # a bad image stops here
    g = g or gallery(ws, model, device, progress=progress)
    known = known_hands(g, model, among)
    return [attribute_one(g, known, model, name, model.embed_one(pixels, device), k, same_painting(g, image, pixels))
            for image, name, pixels in zip(images, names, queries)]


def _closest(g: Gallery, rows: np.ndarray, query: np.ndarray, model: TrainedModel) -> pd.DataFrame:
    """The hand's paintings nearest to the query, with their verdicts."""
    d = row_distances(g.emb[rows], np.broadcast_to(query, (len(rows), len(query))))
    near = np.argsort(d, kind="stable")[:CLOSEST]
    out = g.table.iloc[rows[near]][["image_id", "split", "cache_row"]].copy()
    out["distance"] = d[near]
    out["same_artist_probability"] = [model.probability(x) for x in d[near]]
    return out.reset_index(drop=True)


def attribute_sheet(ws: Workspace, model: TrainedModel, images: list, results: list[Attribution],
                    path: Path, hands: int = 3, pixels: list | None = None) -> None:
    """One row per query: the query as the model sees it (``pixels``, when read already), then each proposed hand's
    closest painting."""
    plt = pyplot()
    data = CacheData(ws)
    fig, axes = plt.subplots(len(results), hands + 1, figsize=(2.6 * (hands + 1), 3.3 * len(results) + 0.4),
                             squeeze=False)
    for n, (row, (image, result)) in enumerate(zip(axes, zip(images, results))):
        for ax in row:
            ax.axis("off")
        row[0].imshow(model.read(image) if pixels is None else pixels[n])
        verdict = textwrap.shorten(result.answer, 52, placeholder="…")
        row[0].set_title(f"{short(result.query, 22)}\n→ {textwrap.fill(verdict, 28)}\n"
                         f"p(unknown hand) = {result.unknown_probability:.2f}", fontsize=9,
                         color=ANSWER_COLOURS[result.verdict])
        for ax, hand in zip(row[1:], result.hands[:hands]):
            if len(hand.closest):
                ax.imshow(np.asarray(data.images[int(hand.closest["cache_row"].iloc[0])]))
            ax.set_title(f"{short(hand.artist, 22)}\np = {hand.probability:.2f}", fontsize=9)
    fig.suptitle("who painted it: the most likely hands, each by its closest painting (p: probability of that hand)\n"
                 "green: named; orange: probably, uncertain; "
                 f"red: unknown hand (p(unknown hand) ≥ {scoring.UNKNOWN_AT:g}: likelier than all known hands)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    save_figure(fig, path)
