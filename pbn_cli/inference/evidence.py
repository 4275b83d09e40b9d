"""Evidence: which regions of one painting resemble which regions of another, and the matching details.

Each painting is read through the image door at a finer scale than the cache
where its file allows (up to ``SCALE`` times the cache's side), cut into
overlapping square tiles at the network's input size (smaller on a small
painting), and every tile is embedded as a painting of one view. A tile's
heat is its similarity to the other painting as a whole (its embedding as
``compare`` sees it). The picture shows it smooth (each tile's value spread
around its centre and blended, so the map covers the painting without
gaps) and relative to this pair: a region's rank among the pair's regions,
not an absolute cosine. The strongest distinct pairs of matching passages
come from the tile-by-tile similarity; they are numbered on the paintings
and shown side by side as details cut from the original files at their own
resolution, each with its similarity and the p(same) the run gives the two
passages alone, as if they were two paintings.

``Evidence.to_dict`` is the one evidence model: the regions and the pairs,
their boxes in the files' own pixels (upright), their scores. `compare
--json` and `attribute --json` carry it, the picture is drawn from it and
the page (`pbn serve`) shows its pairs.

Why the whole other painting and not its closest tile:
``tests/benchmarks/faithfulness.py`` blurs the regions a heat ranks highest
and reads p(same) again; it must fall more than when as much is blurred at
random. On old masters' unseen artists, a tile's similarity to the closest
tile of the other painting barely beat random (docs/benchmarks.md); its
similarity to the other painting as a whole, what p(same) is computed from,
did by intervals apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pbn_cli.core.errors import InputError
from pbn_cli.core.pictures import pyplot, save_figure, short
from pbn_cli.data import imaging
from pbn_cli.answers import calibration
from pbn_cli.model.trained import TrainedModel

if TYPE_CHECKING:
    import torch

SCALE = 3  # at most this many times the cache's side
MAX_STEPS = 5  # tile positions along a side (25 tiles: a 2,000-px pair's evidence in a few seconds on a CPU)
PAIRS = 4  # matched details shown by default (`--details`)
SEPARATE = 0.05  # the most two shown passages of one painting may overlap (a share of the smaller): apart, spread
DETAIL_PX = 360  # the longest side a detail is drawn at in the picture (its box stays in the file's own pixels)
HEAT_WORDS = ("colour: how a region ranks among this pair's regions by its likeness to the other painting as a whole "
              "(dark: least like it, bright: most)")


@dataclass
class Tiles:
    """One painting at the evidence's scale: its pixels, its tiles' boxes (top, left, side) and embeddings, and the
    painting's own embedding."""

    name: str
    pixels: np.ndarray  # (S, S, 3) uint8
    boxes: np.ndarray  # (T, 3)
    emb: np.ndarray  # (T, D)
    whole: np.ndarray  # (D,) the painting as compare embeds it
    place: imaging.Placement | None = None  # where the square lies in the file (None: the square is all there is)
    source: Path | None = None  # the file the details are cut from (None: from ``pixels``)
    _original: np.ndarray | None = field(default=None, repr=False)

    def heat(self, value: np.ndarray) -> np.ndarray:
        """(S, S): each pixel's mean ``value`` over the tiles covering it."""
        side = self.pixels.shape[0]
        total, count = np.zeros((side, side)), np.zeros((side, side))
        for (top, left, size), v in zip(self.boxes, value):
            total[top : top + size, left : left + size] += v
            count[top : top + size, left : left + size] += 1
        return total / np.maximum(count, 1)

    def smooth(self, value: np.ndarray, grid: int = 96) -> np.ndarray:
        """(grid, grid) over the square: each point's mean ``value`` over the tiles covering it (the tiles cover the
        whole square), softened by a Gaussian of a sixth of a tile so that the tiles' edges leave no seams."""
        side = self.pixels.shape[0]
        scale = grid / side
        total, count = np.zeros((grid, grid)), np.zeros((grid, grid))
        for (top, left, size), v in zip(self.boxes, np.asarray(value, np.float64)):
            t0, l0 = int(round(top * scale)), int(round(left * scale))
            t1, l1 = max(int(round((top + size) * scale)), t0 + 1), max(int(round((left + size) * scale)), l0 + 1)
            total[t0:t1, l0:l1] += v
            count[t0:t1, l0:l1] += 1
        covered = total / np.maximum(count, 1)
        sigma = max(float(np.median(self.boxes[:, 2])) * scale / 6, 0.5)
        at = np.arange(grid)
        kernel = np.exp(-((at[:, None] - at[None, :]) ** 2) / (2 * sigma**2))
        kernel /= kernel.sum(1, keepdims=True)  # rows sum to 1: the edges keep their level
        return kernel @ covered @ kernel.T

    def file_box(self, k: int) -> tuple[int, int, int, int]:
        """Tile ``k`` as (x0, y0, x1, y1) in the file's own pixels (upright)."""
        top, left, size = (int(v) for v in self.boxes[k])
        if self.place is None:
            return left, top, left + size, top + size
        return self.place.box(top, left, size)

    def size(self) -> tuple[int, int]:
        """The painting's (width, height) in the file's own pixels (upright)."""
        return (self.place.width, self.place.height) if self.place else (self.pixels.shape[1], self.pixels.shape[0])

    def detail(self, k: int) -> np.ndarray:
        """Tile ``k`` cut from the original file at its own resolution (the file is read once)."""
        if self.source is None:
            original = self.pixels
        else:
            if self._original is None:
                self._original = imaging.read_upright(str(self.source))
            original = self._original
        x0, y0, x1, y1 = self.file_box(k)
        return original[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]


def evidence_side(model: TrainedModel, path: Path) -> int:
    """The side the painting is read at: its own shorter side, between the cache's and SCALE times that."""
    try:
        header = imaging.read_header(str(path))
    except imaging.ImageReadError as err:
        raise InputError(f"cannot read {path}: {err}") from None
    return int(min(max(min(header.width, header.height), model.image_size), SCALE * model.image_size))


def tile_boxes(side: int, size: int) -> np.ndarray:
    """Overlapping square tiles of ``size`` covering a ``side`` square: at most MAX_STEPS a side, about half a tile
    apart, at least 3 a side when the painting is larger than a tile."""
    if side <= size:
        return np.array([[0, 0, side]])
    steps = min(MAX_STEPS, max(3, math.ceil(2 * (side - size) / size) + 1))
    at = np.round(np.linspace(0, side - size, steps)).astype(int)
    return np.array([[top, left, size] for top in at for left in at])


def tiles(model: TrainedModel, path: Path, device: torch.device | None, name: str | None = None,
          seen: np.ndarray | None = None) -> Tiles:
    """The painting at ``path`` read at the evidence's scale, tiled and embedded; its details come from the file.
    ``seen``: the painting as ``model.read`` gives it, when read already (its whole embedding's input)."""
    if not Path(path).is_file():
        raise InputError(f"{name or path} does not exist")
    side = evidence_side(model, path)
    try:
        pixels = imaging.load_rgb(str(path), side, model.fit)
        width, height = imaging.upright_size(str(path))
    except imaging.ImageReadError as err:
        raise InputError(f"cannot read {name or path}: {err}") from None
    whole = model.embed_one(model.read(path) if seen is None else seen, device)
    found = tiles_of(model, pixels, device, name or Path(path).name, whole=whole)
    found.place, found.source = imaging.Placement(width, height, side, model.fit), Path(path)
    return found


def tile_side(side: int, input_size: int) -> int:
    """The network's input size, or less on a small painting (so that its tiles can tell its regions apart)."""
    return min(input_size, max(side // 3, input_size // 2), side)


def tiles_of(model: TrainedModel, pixels: np.ndarray, device: torch.device | None, name: str,
             whole: np.ndarray | None = None) -> Tiles:
    """``pixels`` (a square painting at the evidence's scale) tiled and each tile embedded; ``whole``, the
    painting's embedding, is computed from ``pixels`` brought to the cache's size when not given."""
    boxes = tile_boxes(pixels.shape[0], tile_side(pixels.shape[0], model.config.model.input_size))
    crops = np.stack([pixels[t : t + s, l : l + s] for t, l, s in boxes])
    # a tile is a painting of one view: at (or brought to) the network's input size, it is seen whole
    if model.tiles is not None:  # the onnx engine's tile graph: the same embeddings, without torch
        emb = model.tiles.embed(crops)
    else:
        from pbn_cli.networks.embed import embed_images

        emb = embed_images(model.network(device), lambda idx: crops[idx], len(crops), device)
    if whole is None:
        whole = model.embed_one(imaging.resized(pixels, model.image_size), device)
    return Tiles(name, pixels, boxes, emb, whole)


@dataclass
class Evidence:
    a: Tiles
    b: Tiles
    similarity: np.ndarray  # (Ta, Tb) cosine similarity of every pair of tiles
    heat_a: np.ndarray  # (Ta,) cosine similarity of each tile of a to b as a whole
    heat_b: np.ndarray  # (Tb,) and of each tile of b to a
    alone: np.ndarray | None = None  # (Ta, Tb) p(same) of two passages as if they were two paintings (calibrated)
    _memo: dict = field(default_factory=dict, repr=False, compare=False)  # the data, the picture and the page ask alike

    def strongest(self, n: int = PAIRS, overlap: float = SEPARATE) -> list[tuple[int, int, float]]:
        """Up to ``n`` pairs of tiles (a, b, similarity), strongest first, no two overlapping much on either side
        (worked out once per ``n`` and ``overlap``)."""
        if ("strongest", n, overlap) not in self._memo:
            self._memo[("strongest", n, overlap)] = self._strongest(n, overlap)
        return list(self._memo[("strongest", n, overlap)])

    def _strongest(self, n: int, overlap: float) -> list[tuple[int, int, float]]:
        order = np.dstack(np.unravel_index(np.argsort(-self.similarity, axis=None), self.similarity.shape))[0]
        chosen: list[tuple[int, int, float]] = []
        for i, j in order:
            if all(_overlap(self.a.boxes[i], self.a.boxes[p]) < overlap and _overlap(self.b.boxes[j], self.b.boxes[q]) < overlap
                   for p, q, _ in chosen):
                chosen.append((int(i), int(j), float(self.similarity[i, j])))
                if len(chosen) == n:
                    break
        return chosen

    def ranks(self) -> tuple[np.ndarray, np.ndarray]:
        """Each tile's heat as its rank among both paintings' tiles, from 0 (least like the other) to 1 (most)."""
        if "ranks" not in self._memo:
            self._memo["ranks"] = self._ranks()
        return self._memo["ranks"]

    def _ranks(self) -> tuple[np.ndarray, np.ndarray]:
        heats = np.concatenate([self.heat_a, self.heat_b])
        order = np.argsort(np.argsort(heats, kind="stable"), kind="stable") / max(len(heats) - 1, 1)
        return order[: len(self.heat_a)], order[len(self.heat_a) :]

    def to_dict(self, pairs: int = PAIRS) -> dict:
        """The evidence as data: each painting's regions (boxes in the file's own pixels, upright) with their
        likeness to the other painting and its rank in this pair, and the strongest distinct matching pairs."""
        paintings = {}
        ranks = self.ranks()
        for key, t, heat, rank in (("a", self.a, self.heat_a, ranks[0]), ("b", self.b, self.heat_b, ranks[1])):
            width, height = t.size()
            paintings[key] = {"name": t.name, "width": width, "height": height, "regions": [
                {"box": list(t.file_box(k)), "likeness": float(heat[k]), "rank": float(rank[k])} for k in range(len(heat))]}
        matched = [{"number": n + 1, "a": list(self.a.file_box(i)), "b": list(self.b.file_box(j)), "similarity": sim,
                    "alone_same_artist_probability": None if self.alone is None else float(self.alone[i, j])}
                   for n, (i, j, sim) in enumerate(self.strongest(pairs))]
        return {"heat": "a region's likeness: the cosine similarity of its embedding with the other painting's whole; "
                        "rank: its place among this pair's regions by likeness, 0 least like, 1 most",
                "boxes": "x0, y0, x1, y1 in the file's own pixels, the image upright", **paintings, "pairs": matched}


def _overlap(x, y) -> float:
    (ty, lx, sx), (uy, ly, sy) = x, y
    h = max(0, min(ty + sx, uy + sy) - max(ty, uy))
    w = max(0, min(lx + sx, ly + sy) - max(lx, ly))
    return h * w / min(sx * sx, sy * sy)


def evidence(a: Tiles, b: Tiles, model: TrainedModel | None = None) -> Evidence:
    """Every tile of ``a`` against every tile of ``b`` and against ``b`` whole, and the reverse (cosine, in float64:
    near neighbours differ in late digits); with a calibrated ``model``, the p(same) of every two passages alone."""
    ea, eb, wa, wb = (_unit(x) for x in (a.emb, b.emb, a.whole, b.whole))
    alone = None
    if model is not None and model.calibration:
        distance = np.linalg.norm(a.emb[:, None].astype(np.float64) - b.emb[None].astype(np.float64), axis=2)
        alone = calibration.probability(distance, model.calibration["platt_a"], model.calibration["platt_b"])
    return Evidence(a, b, ea @ eb.T, ea @ wb, eb @ wa, alone)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def evidence_sheet(ev: Evidence, path: Path, title: str, pairs: int = PAIRS) -> dict:
    """The picture of the evidence, drawn from ``ev.to_dict``: both paintings with their smooth heat (this pair's
    ranks) and the matched passages numbered, and under them each pair side by side as details from the files.
    Returns the data it was drawn from."""
    from matplotlib.patches import Rectangle

    data = ev.to_dict(pairs)
    shown, chosen = data["pairs"], ev.strongest(pairs)  # the same pairs, in the same order
    plt = pyplot()
    fig = plt.figure(figsize=(11, 8.2 if shown else 6.4))
    grid = fig.add_gridspec(2 if shown else 1, max(2 * len(shown), 2), height_ratios=[2.5, 1] if shown else [1],
                            left=0.02, right=0.98, top=0.9, bottom=0.13 if shown else 0.16, hspace=0.2, wspace=0.08)
    half = max(len(shown), 1)
    colours = plt.get_cmap("tab10")
    ranks = ev.ranks()
    for side, (t, rank) in enumerate(((ev.a, ranks[0]), (ev.b, ranks[1]))):
        ax = fig.add_subplot(grid[0, side * half : (side + 1) * half])
        extent = (0, t.pixels.shape[1], t.pixels.shape[0], 0)
        ax.imshow(t.pixels)
        heat = ax.imshow(t.smooth(rank), cmap="inferno", alpha=0.5, vmin=0, vmax=1, extent=extent,
                         interpolation="bilinear")
        ax.set(xticks=[], yticks=[], title=short(data["ab"[side]]["name"], 48))
        for n, (i, j, _) in enumerate(chosen):
            top, left, size = t.boxes[(i, j)[side]]
            ax.add_patch(Rectangle((left, top), size, size, fill=False, lw=1.6, ec=colours(n), alpha=0.9))
            ax.text(left + size / 2, top + size / 2, str(n + 1), color="white", fontsize=12, fontweight="bold",
                    ha="center", va="center", bbox={"boxstyle": "circle,pad=0.25", "facecolor": colours(n),
                                                    "edgecolor": "white", "lw": 1})
    for n, (pair, (i, j, _)) in enumerate(zip(shown, chosen)):
        for k, (t, tile) in enumerate(((ev.a, i), (ev.b, j))):
            ax = fig.add_subplot(grid[1, 2 * n + k])
            ax.imshow(_thumbnail(t.detail(tile)))
            ax.set(xticks=[], yticks=[])
            for spine in ax.spines.values():
                spine.set(color=colours(n), lw=2.5)
            x0, y0, x1, y1 = pair["ab"[k]]
            ax.set_xlabel(f"{x1 - x0}×{y1 - y0} px at ({x0}, {y0})", fontsize=7)
        alone = pair["alone_same_artist_probability"]
        words = f"{pair['number']}: similarity {pair['similarity']:.2f}" + (
            f"\nthis passage alone: p(same) {alone:.2f}" if alone is not None else "")
        ax.set_title(words, fontsize=9, x=0, ha="center", color=colours(n))
    bar = fig.colorbar(heat, cax=fig.add_axes((0.25, 0.06 if shown else 0.08, 0.5, 0.018)), orientation="horizontal",
                       ticks=[0, 0.5, 1])
    bar.ax.set_xticklabels(["least like", "median", "most like"], fontsize=8)
    bar.set_label(HEAT_WORDS, fontsize=8)
    what = (f"numbered: the {len(shown)} most similar distinct pairs of passages, shown below from the files at "
            "their own resolution") if shown else "no pairs of passages to show"
    fig.suptitle(f"{title}\n{what}", fontsize=11)
    save_figure(fig, path, tight=False)
    return data


def _thumbnail(pixels: np.ndarray, most: int = DETAIL_PX) -> np.ndarray:
    """A detail no larger than ``most`` a side for the picture (the data keeps its own box)."""
    h, w = pixels.shape[:2]
    if max(h, w) <= most:
        return pixels
    scale = most / max(h, w)
    return np.asarray(imaging.Image.fromarray(pixels).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                             imaging.Image.Resampling.LANCZOS))
