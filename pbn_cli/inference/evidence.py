"""Evidence: which regions of one painting resemble which regions of another.

Each painting is read through the image door at a finer scale than the cache
where its file allows (up to ``SCALE`` times the cache's side), cut into
overlapping square tiles at the network's input size (smaller on a small
painting), and every tile is embedded as a painting of one view. A tile's
heat is its similarity to the other painting as a whole (its embedding as
``compare`` sees it); a pixel's heat is the mean heat of the tiles that
cover it. The strongest distinct pairs of matching regions come from the
tile-by-tile similarity. The picture shows both paintings upright with
their heat over them, a legend, and those pairs joined by lines.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pbn_cli.core.errors import InputError
from pbn_cli.core.pictures import pyplot, save_figure, short
from pbn_cli.data import imaging
from pbn_cli.model.embed import embed_images
from pbn_cli.model.trained import TrainedModel

SCALE = 3  # at most this many times the cache's side
MAX_STEPS = 5  # tile positions along a side (25 tiles: a 2,000-px pair's evidence in a few seconds on a CPU)


@dataclass
class Tiles:
    """One painting at the evidence's scale: its pixels, its tiles' boxes (top, left, side) and embeddings, and the
    painting's own embedding."""

    name: str
    pixels: np.ndarray  # (S, S, 3) uint8
    boxes: np.ndarray  # (T, 3)
    emb: np.ndarray  # (T, D)
    whole: np.ndarray  # (D,) the painting as compare embeds it

    def heat(self, value: np.ndarray) -> np.ndarray:
        """(S, S): each pixel's mean ``value`` over the tiles covering it."""
        side = self.pixels.shape[0]
        total, count = np.zeros((side, side)), np.zeros((side, side))
        for (top, left, size), v in zip(self.boxes, value):
            total[top : top + size, left : left + size] += v
            count[top : top + size, left : left + size] += 1
        return total / np.maximum(count, 1)


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


def tiles(model: TrainedModel, path: Path, device: torch.device, name: str | None = None) -> Tiles:
    """The painting at ``path`` read at the evidence's scale, tiled and embedded."""
    if not Path(path).is_file():
        raise InputError(f"{name or path} does not exist")
    side = evidence_side(model, path)
    try:
        pixels = imaging.load_rgb(str(path), side, model.fit)
    except imaging.ImageReadError as err:
        raise InputError(f"cannot read {name or path}: {err}") from None
    return tiles_of(model, pixels, device, name or Path(path).name, whole=model.embed_one(model.read(path), device))


def tile_side(side: int, input_size: int) -> int:
    """The network's input size, or less on a small painting (so that its tiles can tell its regions apart)."""
    return min(input_size, max(side // 3, input_size // 2), side)


def tiles_of(model: TrainedModel, pixels: np.ndarray, device: torch.device, name: str,
             whole: np.ndarray | None = None) -> Tiles:
    """``pixels`` (a square painting at the evidence's scale) tiled and each tile embedded; ``whole``, the
    painting's embedding, is computed from ``pixels`` brought to the cache's size when not given."""
    boxes = tile_boxes(pixels.shape[0], tile_side(pixels.shape[0], model.config.model.input_size))
    crops = np.stack([pixels[t : t + s, l : l + s] for t, l, s in boxes])
    # a tile is a painting of one view: at (or brought to) the network's input size, it is seen whole
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

    def strongest(self, n: int = 5, overlap: float = 0.3) -> list[tuple[int, int, float]]:
        """Up to ``n`` pairs of tiles (a, b, similarity), strongest first, no two overlapping much on either side."""
        order = np.dstack(np.unravel_index(np.argsort(-self.similarity, axis=None), self.similarity.shape))[0]
        chosen: list[tuple[int, int, float]] = []
        for i, j in order:
            if all(_overlap(self.a.boxes[i], self.a.boxes[p]) < overlap and _overlap(self.b.boxes[j], self.b.boxes[q]) < overlap
                   for p, q, _ in chosen):
                chosen.append((int(i), int(j), float(self.similarity[i, j])))
                if len(chosen) == n:
                    break
        return chosen


def _overlap(x, y) -> float:
    (ty, lx, sx), (uy, ly, sy) = x, y
    h = max(0, min(ty + sx, uy + sy) - max(ty, uy))
    w = max(0, min(lx + sx, ly + sy) - max(lx, ly))
    return h * w / min(sx * sx, sy * sy)


def evidence(a: Tiles, b: Tiles) -> Evidence:
    """Every tile of ``a`` against every tile of ``b`` and against ``b`` whole, and the reverse (cosine, in float64:
    near neighbours differ in late digits)."""
    ea, eb, wa, wb = (_unit(x) for x in (a.emb, b.emb, a.whole, b.whole))
    return Evidence(a, b, ea @ eb.T, ea @ wb, eb @ wa)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def evidence_sheet(ev: Evidence, path: Path, title: str, pairs: int = 5) -> None:
    """Both paintings upright, each with its heat; the strongest matching regions numbered and joined; a legend."""
    from matplotlib.patches import ConnectionPatch, Rectangle

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 6.6))
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.17, wspace=0.06)  # laid out once: one render
    heats = np.concatenate([ev.heat_a, ev.heat_b])
    lo, hi = float(heats.min()), float(heats.max())
    shown = None
    for ax, t, heat in zip(axes, (ev.a, ev.b), (ev.heat_a, ev.heat_b)):
        ax.imshow(t.pixels)
        shown = ax.imshow(t.heat(heat), cmap="inferno", alpha=0.5, vmin=lo, vmax=hi)
        ax.set(xticks=[], yticks=[], title=short(t.name, 48))
    colours = plt.get_cmap("tab10")
    strongest = ev.strongest(pairs)
    for n, (i, j, sim) in enumerate(strongest):
        ends = []
        for ax, t, k in ((axes[0], ev.a, i), (axes[1], ev.b, j)):
            top, left, size = t.boxes[k]
            ax.add_patch(Rectangle((left, top), size, size, fill=False, lw=2, ec=colours(n)))
            ax.text(left + 6, top + 6, str(n + 1), color="white", fontsize=11, fontweight="bold", va="top",
                    bbox={"facecolor": colours(n), "edgecolor": "none", "pad": 1.5})
            ends.append((left + size / 2, top + size / 2))
        fig.add_artist(ConnectionPatch(ends[0], ends[1], "data", "data", axesA=axes[0], axesB=axes[1],
                                       color=colours(n), lw=1.6, alpha=0.8))
    bar = fig.colorbar(shown, cax=fig.add_axes((0.2, 0.08, 0.6, 0.03)), orientation="horizontal",
                       format="%.3f" if hi - lo < 0.05 else "%.2f")  # close heats need the third digit
    bar.set_label("colour: how closely a region resembles the other painting as a whole "
                  "(cosine similarity of their embeddings; bright = close)")
    matches = ", ".join(f"{sim:.3f}" for _, _, sim in strongest)
    fig.suptitle(f"{title}\nnumbered boxes, joined: the {len(strongest)} most similar pairs of regions "
                 f"(similarity {matches})", fontsize=11)
    save_figure(fig, path, tight=False)
